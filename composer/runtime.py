"""onnxruntime sessions that run where they say they run.

    sess = Session("model.onnx", device="auto")     # TensorRT > CUDA > CPU; sess.device says which
    outputs = sess.run({"image": batch})             # dict of numpy arrays by output name

onnxruntime quietly falls back to the CPU when a GPU provider cannot load (a missing
`libcuda.so.1`, no device, a TensorRT library missing). `Session` passes explicit provider
lists, then checks `get_providers()`: asking for `cuda` or `tensorrt` where it is not active
is an error that says why, never a silent CPU run. Before a GPU session, the CUDA and cuDNN
libraries that torch's wheels ship are loaded (`import torch`, then `onnxruntime.preload_dlls()`)
so onnxruntime-gpu finds them without LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import ComposerError

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
OPT_LEVELS = ("disable", "basic", "extended", "all")

_preloaded = False
_preload_note: Optional[str] = None


class SessionError(ComposerError):
    """A model cannot be opened or run on the requested device (exit code 1)."""


def _ort():
    import onnxruntime as ort
    return ort


def preload_cuda_libraries() -> Optional[str]:
    """Load the CUDA/cuDNN libraries of torch's wheels so onnxruntime-gpu can use them; returns
    a note when that was not possible (the caller decides whether it matters)."""
    global _preloaded, _preload_note
    if _preloaded:
        return _preload_note
    note = None
    try:
        import torch  # noqa: F401  (torch's import loads its bundled CUDA libraries)
    except Exception as exc:  # pragma: no cover - torch is a dependency
        note = f"torch could not be imported: {exc}"
    ort = _ort()
    if hasattr(ort, "preload_dlls"):
        import contextlib
        import io
        printed = io.StringIO()
        try:  # finds the nvidia-* site packages that torch's wheels install; it prints, so capture
            with contextlib.redirect_stdout(printed):
                ort.preload_dlls()
        except Exception as exc:
            note = f"onnxruntime.preload_dlls failed: {exc}"
        if printed.getvalue().strip() and note is None:
            note = printed.getvalue().strip().splitlines()[-1]
    _preloaded = True
    _preload_note = note
    return note


def cuda_visible() -> tuple[bool, str]:
    """Whether a CUDA device is usable here, and why not."""
    try:
        import torch
    except Exception:  # pragma: no cover
        return False, "torch is not importable"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return False, "this torch build has no CUDA support"
        return False, "no CUDA device is visible (torch.cuda.is_available() is False: no GPU or no driver)"
    return True, ""


def provider_chain(device: str, available: Sequence[str]) -> list[str]:
    """The explicit provider list asked of onnxruntime for `device`."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "tensorrt":
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chain = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    return chain + ["CPUExecutionProvider"]


class Session:
    """An onnxruntime session on a checked device.

    device: "cpu", "cuda", "tensorrt", or "auto" (TensorRT > CUDA > CPU, whichever loads;
    `self.device` and `self.note` say what it took and why).
    graph_optimization: "disable" | "basic" | "extended" | "all".
    threads: intra-op threads (None: onnxruntime's default, one per core).
    io_binding: on CUDA, bind inputs and outputs on the device (default True there).
    spinning: let idle onnxruntime worker threads spin (lowest latency; False when sharing the CPU).
    """

    def __init__(self, path: Union[str, os.PathLike], device: str = "auto", *, graph_optimization: str = "all",
                 threads: Optional[int] = None, inter_threads: Optional[int] = None, io_binding: Optional[bool] = None,
                 device_id: int = 0, trt_cache_dir: Optional[str] = None, trt_fp16: bool = False,
                 spinning: bool = True):
        ort = _ort()
        self.path = Path(path)
        if device not in DEVICES:
            import difflib
            m = difflib.get_close_matches(str(device), DEVICES, n=1)
            raise SessionError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}"
                               + (f" (did you mean {m[0]!r}?)" if m else ""))
        if graph_optimization not in OPT_LEVELS:
            raise SessionError(f"unknown graph optimisation level {graph_optimization!r}: choose one of "
                               + ", ".join(OPT_LEVELS))
        if threads is not None and threads < 0:
            raise SessionError(f"threads must be 0 (default) or more, not {threads}")
        self.requested = device
        self.note = ""
        preload_note = None
        self._check_file(self.path)

        available = ort.get_available_providers()
        chain: list[str]
        if device in ("cuda", "tensorrt"):
            wanted = PROVIDERS[device]
            if wanted not in available:
                raise SessionError(f"{self.path}: device {device!r} needs {wanted}, which this onnxruntime build "
                                   f"does not have (it has {', '.join(available)}); install onnxruntime-gpu")
            ok, why = cuda_visible()
            if not ok:
                raise SessionError(f"{self.path}: device {device!r} is not usable here: {why}")
            preload_note = preload_cuda_libraries()
            chain = provider_chain(device, available)
        elif device == "auto":
            ok, why = cuda_visible()
            if ok:
                preload_cuda_libraries()
                chain = provider_chain("auto", available)
            else:
                chain = ["CPUExecutionProvider"]
                self.note = f"GPU providers skipped: {why}"
        else:
            chain = ["CPUExecutionProvider"]

        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        if threads:
            so.intra_op_num_threads = threads
        if inter_threads:
            so.inter_op_num_threads = inter_threads
        if not spinning:  # idle worker threads sleep instead of spinning (fairer beside other work)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3          # errors only; we report provider problems ourselves
        options = []
        for p in chain:
            if p == "CUDAExecutionProvider":
                options.append({"device_id": str(device_id)})
            elif p == "TensorrtExecutionProvider":
                o = {"device_id": str(device_id), "trt_fp16_enable": "True" if trt_fp16 else "False"}
                if trt_cache_dir:
                    o.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(trt_cache_dir))
                options.append(o)
            else:
                options.append({})
        try:
            # a path (not bytes) so external data next to the model is found
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=chain,
                                                provider_options=options)
        except Exception as exc:
            raise SessionError(f"cannot load {self.path} in onnxruntime: {_first_line(exc)} "
                               "(corrupted or truncated .onnx file?)") from None
        self.providers: list[str] = list(self.session.get_providers())
        active = self.providers[0] if self.providers else "CPUExecutionProvider"
        if device in ("cuda", "tensorrt") and PROVIDERS[device] not in self.providers:
            raise SessionError(f"{self.path}: {PROVIDERS[device]} was requested but onnxruntime did not activate it "
                               f"(active: {', '.join(self.providers)}); it would have run on the CPU instead. "
                               "Check the CUDA/cuDNN (and TensorRT) libraries onnxruntime-gpu needs"
                               + (f" (preloading them said: {preload_note})" if preload_note else ""))
        self.device = {v: k for k, v in PROVIDERS.items()}.get(active, active)
        if device == "auto":
            skipped = [p for p in chain if p not in self.providers]
            if skipped and not self.note:
                self.note = f"{', '.join(skipped)} did not load"
        self.io_binding = (self.device in ("cuda", "tensorrt")) if io_binding is None else io_binding
        if self.io_binding and self.device == "cpu":
            self.io_binding = False
        self.device_id = device_id
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _check_file(path: Path) -> None:
        if not path.exists():
            raise SessionError(f"model file {path} does not exist")
        if not path.is_file():
            raise SessionError(f"model path {path} is not a file")

    def describe(self) -> str:
        text = f"onnxruntime on {self.device} ({', '.join(self.providers)})"
        return text + (f"; {self.note}" if self.note else "")

    @property
    def inputs(self) -> list[Any]:
        return self.session.get_inputs()

    @property
    def outputs(self) -> list[Any]:
        return self.session.get_outputs()

    def run(self, inputs: Mapping[str, Any], output_names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        """Run with numpy arrays (or torch tensors); returns numpy outputs by name."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise SessionError(f"{self.path}: missing input `{missing[0]}`; the model takes "
                               + ", ".join(self.input_names))
        unknown = [n for n in inputs if n not in self.input_names]
        if unknown:
            raise SessionError(f"{self.path}: unknown input `{unknown[0]}`; the model takes "
                               + ", ".join(self.input_names))
        names = list(output_names or self.output_names)
        if self.io_binding:
            return self._run_bound(inputs, names)
        feed = {n: _numpy(v) for n, v in inputs.items()}
        try:
            values = self.session.run(names, feed)
        except Exception as exc:
            raise SessionError(f"{self.path}: onnxruntime failed to run: {_first_line(exc)}") from None
        return dict(zip(names, values))

    def _run_bound(self, inputs: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
        """IO binding: inputs copied to (or, for CUDA torch tensors, read in place on) the device,
        outputs allocated there, one copy back at the end."""
        ort = _ort()
        binding = self.session.io_binding()
        keep = []
        for n, v in inputs.items():
            try:
                import torch
                is_cuda_tensor = isinstance(v, torch.Tensor) and v.is_cuda
            except Exception:  # pragma: no cover
                is_cuda_tensor = False
            if is_cuda_tensor:
                v = v.contiguous()
                keep.append(v)
                binding.bind_input(n, "cuda", v.device.index or 0, _np_dtype(v), list(v.shape), v.data_ptr())
            else:
                ov = ort.OrtValue.ortvalue_from_numpy(_numpy(v), "cuda", self.device_id)
                keep.append(ov)
                binding.bind_ortvalue_input(n, ov)
        for n in names:
            binding.bind_output(n, "cuda", self.device_id)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise SessionError(f"{self.path}: onnxruntime failed to run: {_first_line(exc)}") from None
        return dict(zip(names, binding.copy_outputs_to_cpu()))


def _numpy(v) -> np.ndarray:
    try:
        import torch
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.ascontiguousarray(v)


def _np_dtype(t) -> Any:
    import torch
    return {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64,
            torch.int64: np.int64, torch.int32: np.int32, torch.uint8: np.uint8, torch.bool: np.bool_}[t.dtype]


def _first_line(exc: BaseException) -> str:
    lines = [l for l in str(exc).strip().splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__
