"""PyTorch bridge: run an ONNX CNN (pruned or not) as a trainable ``torch.nn.Module``.

This is the only onnxprune subpackage that imports :mod:`torch` (an optional dependency:
``pip install onnxprune[torch]``); ``import onnxprune`` never loads it.

API
    ``OnnxModule(model)``
        An ``nn.Module`` that executes the ONNX graph node by node with torch ops, in the
        graph's (topological) order.  ``forward(*inputs)`` takes the graph inputs in order
        (or by name as keyword arguments) and returns one tensor, or a tuple when the graph
        has several outputs.

        * Every float tensor used as a weight, bias, scale or slope (Conv/ConvTranspose
          W and B, Gemm/MatMul constant operands, PRelu slope, InstanceNormalization scale
          and B, a per-channel Add/Sub bias or Mul/Div scale applied right after such a
          node) is an ``nn.Parameter`` named after its initializer (sanitised, e.g.
          ``layer1.0.conv1.weight`` -> ``layer1_0_conv1_weight``); ``module.onnx_names``
          maps every state-dict key back to the ONNX tensor name.  ``trainable="all"``
          makes every float constant a parameter instead.
        * ``BatchNormalization`` (inference form) becomes an :class:`OnnxBatchNorm`
          (a ``torch.nn.modules.batchnorm._BatchNorm``, so ``SyncBatchNorm.convert_sync_batchnorm``
          and the usual ``isinstance`` checks work) in ``module.bn``, keyed by its scale
          initializer's name less ``.weight`` (``bn.layer1_0_bn1.weight``...): ONNX
          scale/B/mean/var are its weight/bias/running_mean/running_var.  (A BN whose
          tensors are shared with other nodes runs as ``F.batch_norm`` on root tensors.)  In train mode it normalises with
          the batch statistics and updates the running statistics with the ONNX momentum
          (``running = momentum * running + (1 - momentum) * batch``, i.e. torch momentum
          ``1 - m``; the variance update uses torch's unbiased batch variance, as the original
          PyTorch training did); in eval mode it uses the running statistics.
        * Other constants are buffers (float; they follow ``.to(device)``) or CPU tensors
          kept off the module (integer/bool shape data).  Nodes whose inputs are all
          constant (legacy exporters' shape arithmetic) are evaluated once at construction.
        * ``Dropout`` is the identity in eval mode and applies dropout in train mode.
        * ``module.source_model`` keeps a copy of the graph (for :func:`to_onnx`);
          ``module.onnx_tensors()`` gives ONNX name -> current tensor.
        * The module follows ``.to(device)`` / ``.double()``; integer shape data stays on
          the CPU, and constant host-side numbers (Clip bounds, Resize scales...) are read
          from CPU copies, so a GPU forward does not synchronise on them.
        * Initializers listed as graph inputs (IR < 4 models) are constants, not inputs.
        * An op outside :data:`SUPPORTED_OPS` (or an unsupported attribute value) raises
          :class:`~onnxprune.errors.OnnxPruneError` naming the op type and node when the
          module is built.

    ``to_onnx(module, path=None, example_input=None, opset=None, method="graph")``
        ``method="graph"`` (default): a copy of the module's source graph with the current
        parameter and running-statistic values written into its initializers (or Constant
        nodes).  Node, tensor, input/output names, opset and metadata stay exactly as they
        were.  BatchNormalization nodes added by :func:`reinsert_batchnorm` are folded back
        into their Conv (``fold_bn="auto"``; ``True`` folds every foldable Conv->BN,
        ``False`` none).  ``opset`` other than the graph's runs onnx's version converter.
        ``method="torch"``: ``torch.onnx.export`` (TorchScript exporter) of the module in eval
        mode; needs ``example_input``; a new graph with new tensor names, shapes frozen to
        the example.  ``check=True`` runs the export with onnxruntime on ``example_input``
        and compares it with the module in eval mode.

    ``reinsert_batchnorm(model)`` / ``fold_batchnorm(model)`` (re-exported from the torch-free
    :mod:`onnxprune.graph.batchnorm`)
        Insert an exactly-identity BatchNormalization (scale 1, B 0, mean 0,
        var such that float32(var + eps) == 1) after each Conv feeding a Relu/Add/Clip,
        so models exported with BN folded can fine-tune with BN; fold inference-form BN
        that directly follows a Conv back into the Conv's weights and bias.

Ops: see :data:`SUPPORTED_OPS` (opsets 9-21, attribute and input forms).
Layout: ``ops/`` (op implementations by family, each registered in ``ops.registry.OPS``;
:data:`SUPPORTED_OPS` is its key set), ``module.py`` (:class:`OnnxModule`), ``export.py``
(:func:`to_onnx`), ``common.py`` (shared helpers).

Not supported: Resize/Upsample ``cubic``, ``tf_crop_and_resize`` and ``antialias``,
AveragePool with dilations, MaxPool's indices output, BatchNormalization's training
outputs, control flow (If/Loop/Scan), non-default domains.
"""
import onnxprune.torch_bridge.common  # noqa: F401  (fails with a clear message without PyTorch)
from onnxprune.graph.batchnorm import fold_batchnorm, reinsert_batchnorm
from onnxprune.torch_bridge.export import to_onnx
from onnxprune.torch_bridge.module import OnnxModule
from onnxprune.torch_bridge.ops import SUPPORTED_OPS, OnnxBatchNorm

__all__ = ["OnnxModule", "OnnxBatchNorm", "to_onnx", "reinsert_batchnorm", "fold_batchnorm", "SUPPORTED_OPS"]
