"""TensorRT with pycuda on NVIDIA GPUs.

The engine is built from the ONNX file with one optimization profile covering every
batch size the batcher releases, in FP16 when the GPU has fast FP16, and cached on
disk under a key naming the GPU model and TensorRT version (an engine is valid for
nothing else). Each in-flight batch gets its own execution context, CUDA stream and
pinned host buffers, taken from a small pool. ``tensorrt`` and ``pycuda`` are imported
only when this backend is asked for; without them :meth:`TensorRTBackend.load` fails
with :class:`BackendUnavailable`.
"""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from services.inference.backends import BackendUnavailable, FloatArray, to_scores, warm_up_runs
from services.inference.backends.trt_plan import Profile, buffer_plan, engine_cache_key, profile_with_preferred

log = structlog.get_logger(__name__)

WORKSPACE_BYTES = 1 << 28


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, pycuda.driver)``, or a clear error saying what is missing."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as error:
        raise BackendUnavailable(
            f"RTML_INFERENCE_BACKEND=tensorrt needs the tensorrt and pycuda packages and an NVIDIA GPU "
            f"(pip install 'rtml[gpu]'); missing: {error.name or error}"
        ) from error
    return trt, cuda


@dataclass(slots=True)
class _Slot:
    context: Any
    stream: Any
    host_in: Any
    host_out: Any
    device_in: Any
    device_out: Any


class TensorRTBackend:
    name = "tensorrt"
    runs_in_thread = True

    def __init__(
        self, *, max_batch_size: int, preferred_batch_sizes: Sequence[int] = (), cache_dir: str = "", streams: int = 2
    ) -> None:
        self.max_batch_size = max_batch_size
        self.preferred_batch_sizes = tuple(preferred_batch_sizes)
        self.cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "rtml" / "trt"
        self.streams = streams
        self.n_features = 0
        self.fp16 = False
        self._cuda: Any = None
        self._context: Any = None
        self._engine: Any = None
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._input = ""
        self._output = ""
        self._out_per_row = 1

    def load(self, artifact: bytes, n_features: int) -> None:
        trt, cuda = import_tensorrt()
        cuda.init()
        device = cuda.Device(0)
        self._cuda = cuda
        self._context = device.retain_primary_context()
        self._context.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            builder = trt.Builder(logger)
            self.fp16 = bool(builder.platform_has_fast_fp16)
            profile = profile_with_preferred(self.max_batch_size, self.preferred_batch_sizes, n_features)
            key = engine_cache_key(
                onnx_sha256=hashlib.sha256(artifact).hexdigest(), gpu_name=device.name(),
                compute_capability=device.compute_capability(), trt_version=trt.__version__,
                fp16=self.fp16, profile=profile,
            )  # fmt: skip
            path = self.cache_dir / key
            if path.exists():
                plan = path.read_bytes()
                log.info("trt_engine_cache_hit", path=str(path))
            else:
                plan = self._build(trt, builder, logger, artifact, profile)
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(plan)
                tmp.replace(path)
                log.info("trt_engine_built", path=str(path), fp16=self.fp16)
            runtime = trt.Runtime(logger)
            self._engine = runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ValueError("TensorRT could not deserialize the engine")
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self._input, self._output = inputs[0], outputs[0]
            plan_sizes = buffer_plan(profile, tuple(self._engine.get_tensor_shape(self._output)))
            self._out_per_row = plan_sizes.output_elements // profile.max_batch
            for _ in range(self.streams):
                host_in = cuda.pagelocked_empty(plan_sizes.input_elements, np.float32)
                host_out = cuda.pagelocked_empty(plan_sizes.output_elements, np.float32)
                self._slots.put(
                    _Slot(
                        context=self._engine.create_execution_context(), stream=cuda.Stream(),
                        host_in=host_in, host_out=host_out,
                        device_in=cuda.mem_alloc(plan_sizes.input_bytes),
                        device_out=cuda.mem_alloc(plan_sizes.output_bytes),
                    )
                )  # fmt: skip
            self.n_features = n_features
        finally:
            self._context.pop()

    def _build(self, trt: Any, builder: Any, logger: Any, artifact: bytes, profile: Profile) -> bytes:
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(artifact):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(network.get_input(0).name, *profile.shapes())
        config.add_optimization_profile(trt_profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ValueError("TensorRT failed to build an engine from the ONNX model")
        return bytes(plan)

    def warm_up(self, batch_sizes: Sequence[int], rounds: int = 3) -> None:
        warm_up_runs(self.run, self.n_features, batch_sizes, rounds)

    def run(self, batch: FloatArray) -> FloatArray:
        if self._engine is None:
            raise RuntimeError("the engine is not loaded")
        rows = batch.shape[0]
        if not 1 <= rows <= self.max_batch_size:
            raise ValueError(f"batch of {rows} rows is outside the engine profile [1, {self.max_batch_size}]")
        cuda = self._cuda
        slot = self._slots.get()
        self._context.push()
        try:
            n_in, n_out = rows * self.n_features, rows * self._out_per_row
            slot.host_in[:n_in] = batch.reshape(-1)
            cuda.memcpy_htod_async(slot.device_in, slot.host_in[:n_in], slot.stream)
            slot.context.set_input_shape(self._input, (rows, self.n_features))
            slot.context.set_tensor_address(self._input, int(slot.device_in))
            slot.context.set_tensor_address(self._output, int(slot.device_out))
            if not slot.context.execute_async_v3(stream_handle=slot.stream.handle):
                raise RuntimeError("TensorRT execution failed")
            cuda.memcpy_dtoh_async(slot.host_out[:n_out], slot.device_out, slot.stream)
            slot.stream.synchronize()
            return to_scores(np.array(slot.host_out[:n_out]), rows)
        finally:
            self._context.pop()
            self._slots.put(slot)
