"""Run a model forward in steps over a fixed set of images, keeping the frontier in between.

Each step computes some wanted tensors for every image, batch by batch, executing only the nodes
not run by an earlier step (plus cheap shape computations that are not batch-major). Tensors a
later step will read (the frontier) are kept in RAM and dropped as soon as every reader has run,
so a whole front-to-back refit costs about one forward pass of each model instead of one prefix
per wave.

Memory is bounded by ``max_bytes``, not by the number of images: the frontier is stored, in
RAM, only for the first ``resident`` images. ``resident`` starts at all images and only shrinks:
at each step, once the first batch tells how many bytes per image the frontier holds during the
step (the stored tensors still read plus the new ones), it becomes at most ``max_bytes`` over
that (a multiple of the batch size, possibly 0) and the stored arrays are cut to it. The images
past ``resident`` store nothing: for each of their batches every earlier step's sub-graph is run
again from the graph input (the same nodes with the same weights, in the same sessions once
built), so their values are bit-identical to a stepper without a cap; it costs a prefix of the
model per step for those images: slower, not different. Beyond the cap, a capped stepper keeps
each step's serialized sub-graph (together about one copy of the model's weights) and, once
images are recomputed, its session.

The pruned model may change between steps (the refitted weights): a step always builds its
sub-graphs from the model it is given, and the stored frontier only holds tensors whose inputs
are final (see ``reconstruct``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.log import get_logger
from onnxprune.runtime import make_session, with_dynamic_batch

__all__ = ["Stepper"]

log = get_logger(__name__)


@functools.cache
def _return_freed_buffers() -> None:
    """Make glibc give freed large buffers back to the system. Each of the many replay sessions
    runs without an onnxruntime arena, but glibc's growing mmap threshold then keeps their freed
    batch buffers in the heap: measured, 50 sessions of one conv on 64 images at 16x32x32 held
    1.2 GB; with the threshold fixed at 1 MiB, 17 MB. Without glibc this does nothing."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 1 << 20)   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _per_image_bytes(arrays) -> int:
    return sum(a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays)


@dataclass
class _Step:
    """One step's sub-graph, what it stored and what was stored after it (the frontier names)."""
    model: bytes | None
    input_name: str
    outputs: list[str]
    kept: list[str]
    after: set[str]
    session: object = None


class Stepper:
    def __init__(self, images: np.ndarray, batch_size: int, providers: list[str],
                 max_bytes: int | None = None, name: str = "model") -> None:
        self.images, self.batch_size, self.providers = images, batch_size, providers
        self.max_bytes, self.name = max_bytes, name
        self.resident = len(images)              # the frontier is stored for images [0, resident)
        self.stored: dict[str, np.ndarray] = {}  # tensor -> value of the resident images
        self.executed: set[int] = set()          # node indices run by an earlier step (resident images)
        self._warned = False
        self._chain: list[_Step] = []             # every step so far, replayed for the images past resident

    def close(self) -> None:
        self.stored.clear()
        self._chain.clear()

    def stored_bytes(self) -> int:
        return sum(a.nbytes for a in self.stored.values())

    # --- the sub-graph of one step ----------------------------------------------------------
    def _closure(self, model: onnx.ModelProto, wanted: list[str], stored) -> tuple[list[int], set[str]]:
        producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
        needed, used, todo = set(), set(), [t for t in wanted if t not in stored]
        while todo:
            t = todo.pop()
            i = producer.get(t)
            if t in stored or i is None or i in needed:
                used.add(t) if t in stored else None
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
        # a symbolic batch for the last, smaller batch; only the step's nodes are converted (the
        # whole model at each step cost ~45 ms on ResNet-56, a fifth of a quick refit)
        batch = g.input[0].type.tensor_type.shape.dim[0].dim_value if g.input else 0
        return with_dynamic_batch(m, batch=batch)

    def _run(self, session, outputs, feeds, wanted, count) -> dict[str, np.ndarray]:
        if session is None:
            return {}
        try:
            return dict(zip(outputs, session.run(outputs, feeds)))
        except Exception as exc:
            raise OnnxPruneError(f"reconstruct: onnxruntime cannot run the part of the model up to "
                                 f"{', '.join(wanted[:2])} on a batch of {count} "
                                 f"({str(exc).splitlines()[0]}); prune with --recover none") from None

    def _feeds(self, session, input_name: str, start: int, stop: int, frontier) -> dict[str, np.ndarray]:
        return {i.name: self.images[start:stop] if i.name == input_name else frontier[i.name]
                for i in session.get_inputs()} if session is not None else {}

    def _replay(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The frontier of images [start, stop) (not stored): every earlier step's sub-graph again."""
        frontier: dict[str, np.ndarray] = {}
        for st in self._chain:
            if st.session is None and st.outputs:
                st.session = make_session(st.model, self.providers, quiet=True, arena=False)
            values = self._run(st.session, st.outputs, self._feeds(st.session, st.input_name, start, stop, frontier),
                               st.outputs, stop - start)
            frontier.update((t, values[t]) for t in st.kept)
            frontier = {t: v for t, v in frontier.items() if t in st.after}
        return frontier

    # --- the memory cap ---------------------------------------------------------------------------
    def _shrink(self, live: list[str], new: list[np.ndarray]) -> None:
        """Fit the frontier held during this step (``live`` stored tensors + ``new`` first-batch
        values to keep) under ``max_bytes``: lower ``resident`` and cut the stored arrays."""
        per_image = _per_image_bytes([self.stored[t] for t in live] + new)
        if self.max_bytes is None or per_image == 0:
            return
        fits = int(self.max_bytes // per_image) // self.batch_size * self.batch_size
        if fits >= self.resident:
            return
        n = len(self.images)
        if not self._warned:
            self._warned = True
            log.info(f"reconstruct: the activations kept between waves for the {self.name} model would "
                     f"need {per_image * n / 2 ** 20:.4g} MB for all {n} images; within its share of the "
                     f"memory cap ({self.max_bytes / 2 ** 20:.4g} MB) they are kept for {fits} images and "
                     f"recomputed from the input at each wave for the other {n - fits} (slower, same "
                     f"result); raise the cap with --recover-memory MB")
        self.resident = fits
        _return_freed_buffers()
        for t in list(self.stored):                  # copies: a view would keep the whole array alive
            self.stored[t] = self.stored[t][:fits].copy()

    # --- a step --------------------------------------------------------------------------------
    def step(self, model: onnx.ModelProto, wanted: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{tensor: batch value}`` of ``wanted`` for each batch of images, in order."""
        n, input_name = len(self.images), model.graph.input[0].name
        nodes, used = self._closure(model, wanted, self.stored)
        done = self.executed | set(nodes)
        later = self._later_readers(model, done)
        for t in [t for t in self.stored if t not in used and t not in later and t not in wanted]:
            del self.stored[t]                       # read by no one any more
        produced = [o for i in nodes for o in model.graph.node[i].output if o]
        keep = [t for t in produced if t in later and t not in self.stored]
        outputs = list(dict.fromkeys([t for t in wanted if t not in self.stored] + keep))
        sub = self._submodel(model, nodes, used, outputs).SerializeToString() if outputs else None
        session = make_session(sub, self.providers, quiet=True, arena=self.max_bytes is None) if outputs else None
        kept: list[str] = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            resident = start < self.resident
            frontier = {t: a[start:stop] for t, a in self.stored.items()} if resident else self._replay(start, stop)
            values = self._run(session, outputs, self._feeds(session, input_name, start, stop, frontier),
                               wanted, stop - start)
            out = {t: values[t] if t in values else frontier[t] for t in wanted}
            if start == 0:
                kept = [t for t in keep if values[t].ndim and values[t].shape[0] == stop - start
                        and values[t].dtype.kind == "f"]
                self._shrink(list(self.stored), [values[t] for t in kept])
                for t in kept:
                    self.stored[t] = np.empty((self.resident,) + values[t].shape[1:], values[t].dtype)
            del frontier
            for t in kept:
                if stop <= self.resident and self.stored[t].shape[1:] == values[t].shape[1:]:
                    self.stored[t][start:stop] = values[t]
            yield out
        self.executed = {i for i in done if not any(o in later and o not in self.stored
                                                    for o in model.graph.node[i].output)}
        for t in [t for t in self.stored if t not in later]:
            del self.stored[t]
        if self.max_bytes is not None:               # how the images past resident get here again
            self._chain.append(_Step(sub, input_name, outputs, kept, set(self.stored),
                                     session if self.resident < n else None))
