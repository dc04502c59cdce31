"""Run a model forward in steps over a fixed set of images, keeping the frontier in between.

Each step computes some wanted tensors for every image, batch by batch, executing only the nodes
not run by an earlier step (plus cheap shape computations that are not batch-major). Tensors a
later step will read are stored for all images in memory-mapped files under a temporary folder,
and dropped as soon as every reader has run, so a whole front-to-back refit costs about one
forward pass of each model instead of one prefix per wave.

The pruned model may change between steps (the refitted weights): a step always builds its
sub-graph from the model it is given, and the stored frontier only holds tensors whose inputs
are final (see ``reconstruct``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.runtime import make_session, with_dynamic_batch

__all__ = ["Stepper"]


class Stepper:
    def __init__(self, images: np.ndarray, batch_size: int, providers: list[str]) -> None:
        self.images, self.batch_size, self.providers = images, batch_size, providers
        self._dir = tempfile.TemporaryDirectory(prefix="onnxprune-recover-")
        self.stored: dict[str, np.ndarray] = {}
        self.executed: set[int] = set()          # node indices run by an earlier step
        self._files = 0

    def close(self) -> None:
        self.stored.clear()
        self._dir.cleanup()

    # --- the sub-graph of one step ----------------------------------------------------------
    def _closure(self, model: onnx.ModelProto, wanted: list[str]) -> tuple[list[int], set[str]]:
        producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
        needed, used, todo = set(), set(), [t for t in wanted if t not in self.stored]
        while todo:
            t = todo.pop()
            i = producer.get(t)
            if t in self.stored or i is None or i in needed:
                used.add(t) if t in self.stored else None
                continue
            needed.add(i)
            todo.extend(x for x in model.graph.node[i].input if x)
        return sorted(needed), used

    def _later_readers(self, model: onnx.ModelProto, done: set[int]) -> set[str]:
        """Tensors read by nodes that have not run yet."""
        return {x for i, n in enumerate(model.graph.node) if i not in done for x in n.input if x}

    def _submodel(self, model, nodes, used, outputs) -> onnx.ModelProto:
        g = model.graph
        names = {x for i in nodes for x in g.node[i].input}
        sub = onnx.helper.make_graph(
            [g.node[i] for i in nodes], "step",
            [vi for vi in g.input if vi.name in names and vi.name not in used] +
            [onnx.helper.make_tensor_value_info(t, onnx.helper.np_dtype_to_tensor_dtype(self.stored[t].dtype), None)
             for t in sorted(used)],
            [onnx.helper.make_empty_tensor_value_info(t) for t in outputs],
            [t for t in g.initializer if t.name in names])
        m = onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        return m

    # --- a step --------------------------------------------------------------------------------
    def step(self, model: onnx.ModelProto, wanted: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{tensor: batch value}`` of ``wanted`` for each batch of images, in order."""
        model = with_dynamic_batch(model)
        nodes, used = self._closure(model, wanted)
        done = self.executed | set(nodes)
        later = self._later_readers(model, done)
        produced = [o for i in nodes for o in model.graph.node[i].output if o]
        keep = [t for t in produced if t in later and t not in self.stored]
        outputs = list(dict.fromkeys([t for t in wanted if t not in self.stored] + keep))
        session = make_session(self._submodel(model, nodes, used, outputs), self.providers, quiet=True) \
            if outputs else None
        input_name = model.graph.input[0].name
        n = len(self.images)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            values = {}
            if session is not None:
                feeds = {i.name: (self.images[start:stop] if i.name == input_name else self.stored[i.name][start:stop])
                         for i in session.get_inputs()}
                try:
                    values = dict(zip(outputs, session.run(outputs, feeds)))
                except Exception as exc:
                    raise OnnxPruneError(f"reconstruct: onnxruntime cannot run the part of the model up to "
                                         f"{', '.join(wanted[:2])} on a batch of {stop - start} "
                                         f"({str(exc).splitlines()[0]}); prune with --recover none") from None
            for t in keep:
                v = values[t]
                if start == 0 and v.ndim and v.shape[0] == stop - start and v.dtype.kind == "f":
                    self._files += 1                 # a fresh file each time: never truncate a live map
                    self.stored[t] = np.lib.format.open_memmap(Path(self._dir.name) / f"t{self._files}.npy",
                                                               mode="w+", dtype=v.dtype, shape=(n,) + v.shape[1:])
                if t in self.stored and self.stored[t].shape[1:] == v.shape[1:] and v.shape[0] == stop - start:
                    self.stored[t][start:stop] = v
            yield {t: (self.stored[t][start:stop] if t in self.stored and t not in values else values[t])
                   for t in wanted}
        self.executed = {i for i in done if not any(o in later and o not in self.stored
                                                    for o in model.graph.node[i].output)}
        for t in [t for t in self.stored if t not in later]:
            del self.stored[t]
