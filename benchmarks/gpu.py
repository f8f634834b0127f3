"""The CUDA paths of batchlab proven in one run (docs/performance.md, "The GPU check"): 1. each precision
(fp32, bf16, fp16 with loss scaling) in both engines, a pack's members against their runs alone; 2. kill
and resume from a checkpoint, both engines; 3. throughput of the batched engine against the same runs one
after another, batch sizes 16 to 4096, with peak memory; 4. the smoke study with ``training.device=cuda``.
Without CUDA it runs the CPU parts of 1 to 3 and says which parts it skipped, and why. Exit code 1 if a
check failed. The data: CIFAR-shaped synthetic images (seeded) in batchlab.data's format; the specs those of
``cifar10`` (same shape and classes) with a budget in steps, so the engines see what a study gives them.

    python benchmarks/gpu.py                    # everything this machine can run (sized for 8 minutes on one H200)
    python benchmarks/gpu.py --quick            # fewer steps and batch sizes (CI runs it on the CPU)
    python benchmarks/gpu.py --out gpu-check/   # also save the report and the measurements there
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from batchlab import batched, config, data, grid, hardware, models, sequential, stacked, store, training  # noqa: E402
from batchlab.checkpoint import Checkpointer, TrainingInterrupted  # noqa: E402
from report import Report  # noqa: E402  (benchmarks/report.py)

PRECISIONS = ("fp32", "bf16", "fp16")
LRS = (0.0005, 0.001, 0.002)  # the K = 3 members' learning rates: cnn_bn at batch 16 diverges from about 0.01
# A member follows its run alone when the norm of the difference of their parameters is at most this
# fraction of the distance the run's parameters travelled from their initialization. Rounding alone gives
# 1e-6 in fp32 on the CPU, but now and then a max-pooling or ReLU decision that rounding flips sends one
# gradient entry elsewhere: 4e-3 after 10 steps (the grouped convolution of the pack and the plain one of
# the run alone sum in other orders); bf16 and fp16 round at 4e-3 and 5e-4 (measured on the CPU: 2e-2 and
# 8e-3). A member with another learning rate or momentum, or the wrong batch, is off by 0.1 to 1.
TOLERANCE = {"fp32": 1e-2, "bf16": 5e-2, "fp16": 2.5e-2}
CUDA_FP32_TOLERANCE = 2.5e-2  # cuDNN convolutions take TF32 (fp16's 10-bit mantissa) by default
CPU_EXAMPLES = (512, 128)  # training and test examples of the CPU parts: evaluation sets their pace


@dataclass
class Plan:
    """The sizes of one run of the script (see :func:`make_plan`)."""

    equal_steps: int  # section 1: steps of each run
    resume_steps: int  # section 2: steps of each run (stopped at 60 %)
    batch_sizes: list[int]  # section 3
    warmup: int  # section 3: untimed steps before the timed ones
    smoke_timeout: int  # section 4: seconds

    def timed_steps(self, batch_size: int, cuda: bool) -> int:
        """Section 3's timed steps at ``batch_size``: 200 on CUDA up to 256, fewer above; few on the CPU."""
        if not cuda:
            return 3 if len(self.batch_sizes) <= 3 else 10
        return max(30, min(200, 200 * 256 // batch_size)) if self.batch_sizes[-1] > 256 else 50


def make_plan(quick: bool, cuda: bool) -> Plan:
    if cuda:
        sizes = [16 * 2**i for i in range(5 if quick else 9)]  # 16 ... 256 or 4096
        return Plan(20 if quick else 50, 40 if quick else 60, sizes, 10, 420)
    return Plan(10, 20 if quick else 40, [16, 32, 64] if quick else [16, 32, 64, 128, 256], 2, 0)


def write_synthetic_cifar(path: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """CIFAR-shaped images (3x32x32, 10 classes): a class pattern under noise, standardized, seeded."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(10, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n_train + n_test)
    x = 0.3 * patterns[y] + rng.normal(size=(n_train + n_test, 3, 32, 32)).astype(np.float32)
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    y = y.astype(np.int64)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


def make_specs(arch: str, batch_size: int, steps: int, precision: str = "fp32", lrs=LRS, points: int = 1) -> list[dict]:
    """The runs' specs, as a study gives them (config.validate, grid.expand): ``cifar10`` (the synthetic
    data's shape and classes) augmented as configs/cifar10_gpu.yaml does it (random crops and flips drawn on
    the data's device), with a budget in steps, without the noise scale and the sharpness."""
    raw = {"datasets": ["cifar10"], "architectures": [arch], "batch_sizes": [batch_size], "learning_rates": list(lrs),
           "budget": {"steps": steps}, "optimizer": {"name": "sgd", "momentum": 0.9}, "seeds": [0],
           "precision": precision, "augmentation": {"cifar10": {"crop_padding": 4, "flip": True}},
           "evaluation": {"points": points, "noise_scale": {"pairs": 0}, "sharpness": {"epsilons": []}}}
    return grid.expand(config.validate(raw))


def parameter_gap(a: dict, b: dict) -> tuple[float, float]:
    """The largest |difference| over all floating-point tensors (buffers too) of two state dicts, and the
    norm of the difference of their parameters (running statistics left out)."""
    names = [n for n, t in b.items() if t.is_floating_point()]
    largest = max(float((a[n].float() - b[n].float()).abs().max()) for n in names)
    params = [n for n in names if "running_" not in n]
    norm = float(torch.cat([(a[n].float() - b[n].float()).flatten() for n in params]).norm())
    return largest, norm


def fp16_unsupported(device: torch.device) -> str | None:
    """Why fp16 autocast with loss scaling cannot train a convolution on ``device`` (None when it can)."""
    try:
        model = torch.nn.Conv2d(3, 4, 3).to(device)
        scaler = torch.amp.GradScaler(device.type)
        with torch.autocast(device.type, dtype=torch.float16):
            loss = model(torch.randn(2, 3, 8, 8, device=device)).float().square().mean()
        scaler.scale(loss).backward()
        return None
    except Exception as error:  # noqa: BLE001 (any failure is the reason to skip)
        return f"torch {torch.__version__} cannot: {type(error).__name__}: {str(error).splitlines()[0]}"


def compare_engines(report: Report, device: torch.device, tensors: dict, precision: str, steps: int) -> None:
    """Section 1 for one device and precision: the pack batched against each member alone."""
    specs = make_specs("cnn_bn", 16, steps, precision, points=2)
    states: list[dict] = []
    together = batched.train_batched(specs, tensors, device, final_states=states)
    tolerance = CUDA_FP32_TOLERANCE if (device.type, precision) == ("cuda", "fp32") else TOLERANCE[precision]
    for spec, (history, summary), state in zip(specs, together, states):
        alone_state: dict = {}
        alone_history, alone_summary = sequential.train_run(spec, tensors, device, final_state=alone_state)
        largest, norm = parameter_gap(state, alone_state)
        relative = norm / max(alone_summary["final_dist_init"], 1e-12)
        loss_gap = max(float((history[c] - alone_history[c]).abs().max()) for c in ("train_loss", "test_loss"))
        report.line(f"{device.type} {precision} lr {spec['lr']:g}: max |dw| {largest:.3g}, |dw| / distance travelled "
                    f"{relative:.3g}, max |d loss| {loss_gap:.3g}{' (bitwise equal)' if largest == 0 else ''}",
                    device=device.type, precision=precision, lr=spec["lr"], steps=steps, max_weight_diff=largest,
                    relative_diff=relative, max_loss_diff=loss_gap)
        same = (summary["diverged_at_step"] == alone_summary["diverged_at_step"] and len(history) == len(alone_history)
                and summary["device"] == alone_summary["device"] == device.type)
        report.check(same and math.isfinite(loss_gap) and relative <= tolerance,
                     f"{device.type} {precision} lr {spec['lr']:g}: follows its run alone over {steps} steps "
                     f"({relative:.2g} <= {tolerance:g}; same divergence, device {summary['device']})")


def section_engines(report: Report, devices: dict, plan: Plan, skips: dict) -> None:
    report.section("1. engines x precisions")
    for name, (device, tensors) in devices.items():
        for precision in PRECISIONS:
            reason = fp16_unsupported(device) if precision == "fp16" else None
            if reason:
                report.skip(f"{name} fp16", reason)
                continue
            steps = plan.equal_steps if name == "cuda" else make_plan(True, False).equal_steps
            compare_engines(report, device, tensors, precision, steps)
    for part, reason in skips.items():
        report.skip(f"{part} (fp32, bf16, fp16)", reason)
    report.end_section()


class StopAt(Checkpointer):
    """A checkpointer that receives a stop request (as from SIGTERM) when training reaches ``stop_at``."""

    def __init__(self, folder: Path, stop_at: int, every_steps: int):
        super().__init__(folder, every_minutes=None, every_steps=every_steps)
        self.stop_at = stop_at

    def due(self, step: int) -> bool:
        if step == self.stop_at:
            self.stop_signal = signal.SIGTERM
        return super().due(step)


def stopped_and_resumed(engine: str, specs: list[dict], tensors: dict, device: torch.device, folder: Path,
                        stop_at: int) -> tuple[list, list, list, list[dict]]:
    """Train ``specs`` without a stop, then stopped at ``stop_at`` and resumed: both runs' (history,
    summary) pairs and final states, and the checkpoints resumed from."""
    every = max(1, stop_at // 2)
    if engine == "batched":
        whole_states: list = []
        whole = batched.train_batched(specs, tensors, device, final_states=whole_states)
        try:
            batched.train_batched(specs, tensors, device, checkpoints=StopAt(folder, stop_at, every))
        except TrainingInterrupted:
            pass
        saved = [Checkpointer(folder).load(s) for s in specs]
        resumed_states: list = []
        resumed = batched.train_batched(specs, tensors, device, final_states=resumed_states, resume=saved)
        return whole, resumed, list(zip(whole_states, resumed_states)), saved
    spec = specs[0]
    whole_state, resumed_state = {}, {}
    whole = sequential.train_run(spec, tensors, device, final_state=whole_state)
    try:
        sequential.train_run(spec, tensors, device, checkpoints=StopAt(folder, stop_at, every))
    except TrainingInterrupted:
        pass
    saved = [Checkpointer(folder).load(spec)]
    resumed = sequential.train_run(spec, tensors, device, final_state=resumed_state, resume=saved[0])
    return [whole], [resumed], [(whole_state, resumed_state)], saved


def check_resume(report: Report, device: torch.device, tensors: dict, engine: str, precision: str, steps: int) -> None:
    """Section 2 for one device, engine and precision."""
    specs = make_specs("cnn_bn", 16, steps, precision, lrs=LRS[:2] if engine == "batched" else LRS[:1], points=2)
    stop_at = int(steps * 0.6)
    with tempfile.TemporaryDirectory() as folder:
        whole, resumed, states, saved = stopped_and_resumed(engine, specs, tensors, device, Path(folder), stop_at)
    if any(s is None for s in saved):
        report.check(False, f"{device.type} {engine} {precision}: no checkpoint saved at step {stop_at}")
        return
    largest = max(parameter_gap(a, b)[0] for a, b in states)
    relative = max(parameter_gap(a, b)[1] / max(w[1]["final_dist_init"], 1e-12) for (a, b), w in zip(states, whole))
    columns = [c for c in whole[0][0].columns if c != "wall_time"]
    history = max(float((w[0][columns] - r[0][columns]).abs().max().max()) for w, r in zip(whole, resumed))
    bitwise = largest == 0 and history == 0
    report.line(f"{device.type} {engine} {precision}: stopped at step {saved[0]['step']}/{steps}, resumed: "
                + ("bitwise equal" if bitwise else f"max |dw| {largest:.3g} (|dw| / distance travelled {relative:.3g}), "
                                                   f"max |d history| {history:.3g}"),
                device=device.type, engine=engine, precision=precision, bitwise=bitwise, max_weight_diff=largest,
                relative_diff=relative, max_history_diff=history)
    # on the CPU bitwise; on CUDA, where a kernel may sum in another order from one call to the next, as close
    # as a member is to its run alone (section 1)
    tolerance = CUDA_FP32_TOLERANCE if precision == "fp32" else TOLERANCE[precision]
    ok = saved[0]["step"] == stop_at and (bitwise if device.type == "cpu" else relative <= tolerance)
    report.check(ok, f"{device.type} {engine} {precision}: resumed equals uninterrupted "
                     f"({'bitwise' if device.type == 'cpu' else f'{relative:.2g} <= {tolerance:g}'})")
    if device.type == "cuda":
        report.check(saved[0]["rng"]["cuda"] is not None, f"cuda {engine} {precision}: the checkpoint holds the CUDA "
                                                          "random number state")


def section_resume(report: Report, devices: dict, plan: Plan, skips: dict) -> None:
    report.section("2. kill and resume")
    for name, (device, tensors) in devices.items():
        precisions = ["fp32"] + (["fp16"] if fp16_unsupported(device) is None else [])
        if len(precisions) == 1:
            report.skip(f"{name} fp16", fp16_unsupported(device) or "")
        for engine in ("sequential", "batched"):
            for precision in precisions:
                steps = plan.resume_steps if name == "cuda" else make_plan(True, False).resume_steps
                check_resume(report, device, tensors, engine, precision, steps)
    for part, reason in skips.items():
        report.skip(f"{part} (both engines, with the CUDA random number state)", reason)
    report.end_section()


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so the clock reads the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(state, settings: training.TrainingSettings, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds of ``steps`` training steps of an engine's state after ``warmup`` untimed ones."""
    for _ in range(warmup):
        state.step(settings.autocast)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        state.step(settings.autocast)
    synchronize(device)
    return time.perf_counter() - start


def measure_engine(make, specs: list[dict], device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds of the timed steps and peak memory (MB) of the state ``make()`` builds: memory over its first
    two steps in a pass of its own (batchlab.hardware.peak_memory), then the timed steps."""
    with training.TrainingSettings(device, specs[0]["batch_size"], specs[0]["precision"]) as settings:
        hardware.free_memory()
        with hardware.peak_memory(device) as memory:
            state = make()
            for _ in range(2):
                state.step(settings.autocast)
        seconds = timed(state, settings, warmup, steps, device)
    if any(state.diverged_at if isinstance(state.diverged_at, list) else [state.diverged_at]):
        raise RuntimeError("a run diverged during the throughput steps")
    return seconds, memory["mb"]


def throughput_row(report: Report, arch: str, b: int, tensors: dict, device: torch.device, plan: Plan,
                   precision: str) -> None:
    """Section 3 at one architecture and batch size: one after another, then batched where it stacks."""
    steps = plan.timed_steps(b, device.type == "cuda")
    specs = make_specs(arch, b, 2 + plan.warmup + steps, precision)
    k, samples = len(specs), len(specs) * steps * b
    try:
        alone = [measure_engine(lambda s=s: sequential.SequentialRun(s, tensors, device), [s], device, plan.warmup,
                                steps) for s in specs]
        seq_seconds, seq_mb = sum(t for t, _ in alone), max(m for _, m in alone)
        probe = models.build(arch, tuple(tensors["x_train"].shape[1:]), 10)
        together = (measure_engine(lambda: batched.BatchedPack(specs, tensors, device), specs, device, plan.warmup,
                                   steps) if stacked.can_stack(probe) else None)
    except Exception as error:  # noqa: BLE001 (out of memory is a result; anything else fails the check)
        hardware.free_memory()
        fits = hardware.is_out_of_memory(error)
        report.line(f"{arch:12} B {b:5}: does not fit ({type(error).__name__})" if fits else f"{arch} B {b}: {error}")
        if not fits:
            report.check(False, f"{arch} B {b}: measured")
        return
    seq_rate = samples / seq_seconds
    text = f"{arch:12} B {b:5} x{steps:4} steps: one after another {seq_rate:9.0f} samples/s, {seq_mb:8.1f} MB; "
    if together is None:
        text += "batched n/a (not a plain sequence of layers: packs.choose_engine trains it one run after another)"
        rate = mb = None
    else:
        rate, mb = samples / together[0], together[1]
        text += f"batched (K={k}) {rate:9.0f} samples/s, {mb:8.1f} MB, {rate / seq_rate:5.2f}x"
    report.line(text, arch=arch, batch_size=b, members=k, steps=steps, precision=precision, device=device.type,
                sequential_samples_per_s=seq_rate, sequential_peak_mb=seq_mb, batched_samples_per_s=rate,
                batched_peak_mb=mb)
    report.check(seq_rate > 0 and seq_mb > 0 and (rate is None or (rate > 0 and mb > 0)), f"{arch} B {b}: measured")


def section_throughput(report: Report, device: torch.device, tensors: dict, plan: Plan, skip: str | None) -> None:
    report.section("3. throughput")
    precision = "bf16" if device.type == "cuda" else "fp32"  # bf16: as configs/cifar10_gpu.yaml trains
    report.say(f"  on {device.type}, {precision}, K={len(LRS)}, batch sizes {plan.batch_sizes[0]}..{plan.batch_sizes[-1]}, "
               f"{plan.warmup} warm-up steps untimed, no evaluation; peak memory: "
               + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "batchlab.hardware.peak_memory (profiler)"))
    for arch in ("cnn_bn", "resnet_small"):
        for b in plan.batch_sizes:
            throughput_row(report, arch, b, tensors, device, plan, precision)
    if skip:
        report.skip("cuda (batch sizes up to 4096, torch.cuda.max_memory_allocated)", skip)
    report.end_section()


def section_smoke(report: Report, plan: Plan, skip: str | None) -> None:
    report.section("4. smoke study on the GPU")
    if skip:
        report.skip("cuda", f"{skip} (the CPU smoke study is run by benchmarks/study.py and the test suite)")
        report.end_section()
        return
    # GPU slots (batchlab.gpus): at most two jobs share the GPU, each pinned to it by CUDA_VISIBLE_DEVICES
    training_settings = {"device": "cuda", "jobs_per_gpu": 2}
    # without LaTeX the paper rule fails with one line; everything before it is what this section checks
    omit = [] if shutil.which("latexmk") else ["--omit-from", "build_paper"]
    if omit:
        report.line("latexmk not found: the study stops before the paper (--omit-from build_paper)")
    override = "training={" + ", ".join(f"{k}: {v}" for k, v in training_settings.items()) + "}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
               "--configfile", str(ROOT / "configs" / "smoke.yaml"), "--cores", "all", *omit, "--config", override]
        start = time.perf_counter()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=plan.smoke_timeout)
            code, tail = result.returncode, result.stderr[-3000:]
        except subprocess.TimeoutExpired:
            code, tail = None, f"stopped after {plan.smoke_timeout} s"
        wall = time.perf_counter() - start
        summaries = [json.loads(p.read_text()) for p in store.finished(work / "results" / "runs")]
    devices = [summary.get("device") for summary in summaries]
    pinned = {summary.get("cuda_visible_devices") for summary in summaries}
    report.line(f"snakemake --cores all --configfile configs/smoke.yaml --config '{override}': {wall:.1f} s, "
                f"exit {code}, {len(devices)} runs", wall_seconds=wall, exit=code, runs=len(devices))
    report.check(code == 0, "the smoke study finished" + ("" if code == 0 else f":\n{tail}"))
    report.check(bool(devices) and set(devices) == {"cuda"}, f"every run's summary says device cuda ({sorted(set(devices))})")
    report.check(bool(pinned) and None not in pinned and "" not in pinned,
                 f"every run was pinned to a GPU slot's device (CUDA_VISIBLE_DEVICES {sorted(map(str, pinned))})")
    report.end_section()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and batch sizes (CI)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU parts, and the CUDA parts where CUDA is present")
    parser.add_argument("--out", type=Path, help="save report.txt and measurements.json in this folder")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    skip = ("not asked for (--device cpu)" if args.device == "cpu" else
            None if cuda else f"no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False)")
    # as training jobs run (batchlab.packs.train_pack)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_flush_denormal(True)
    torch.set_num_threads(1 if not cuda else min(4, torch.get_num_threads()))
    warnings.filterwarnings("ignore", message="invalid value encountered")  # fp16's skipped steps: inf norms
    plan = make_plan(args.quick, skip is None)
    report = Report()
    report.say(f"batchlab GPU check: torch {torch.__version__}, "
               + (torch.cuda.get_device_name() if skip is None else f"CPU {training.cpu_name()}")
               + f", {'quick' if args.quick else 'full'} mode")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic_cifar.npz"
        write_synthetic_cifar(path, *((8192, 2048) if skip is None else CPU_EXAMPLES))
        arrays = data.load(path)
    cpu_arrays = {k: v[: CPU_EXAMPLES[0] if "train" in k else CPU_EXAMPLES[1]] for k, v in arrays.items()}
    devices = {} if args.device == "cuda" else {"cpu": (torch.device("cpu"), training.to_tensors(cpu_arrays, torch.device("cpu")))}
    if skip is None:
        devices["cuda"] = (torch.device("cuda"), training.to_tensors(arrays, torch.device("cuda")))
    skips = {"cuda": skip} if skip else {}
    section_engines(report, devices, plan, skips)
    section_resume(report, devices, plan, skips)
    section_throughput(report, *devices["cuda" if skip is None else "cpu"], plan, skip)
    section_smoke(report, plan, skip)
    code = report.summary()
    if args.out:
        report.save(args.out)
    sys.exit(code)


if __name__ == "__main__":
    main()
