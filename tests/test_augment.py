"""batchlab.augment and the augmentation's way through the config, the grid and both engines: the crop and
flip themselves, the per-run counter-based stream (seeds differ, steps differ, a member of a batched pack
draws what its run alone draws, a resumed run what the uninterrupted one draws), evaluation on the clean
data, run ids, the hardware sweep and the config's one-line errors. Digits (1 x 8 x 8 images) keep it fast."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from batchlab import augment, batched, config, data, grid, hardware, models, sequential, training
from batchlab.checkpoint import Checkpointer, TrainingInterrupted
from studies import TINY, tiny_specs
from test_checkpoint import StopAt, assert_same_run, assert_same_state

CPU = torch.device("cpu")
ON = {"crop_padding": 2, "flip": True}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    data.prepare("digits", data.resolve_options("digits", {}), "unused", path)
    return training.to_tensors(data.load(path), CPU)


def digits_specs(augmentation=ON, seeds=(0, 1, 2), steps=30, lrs=(0.05,), **changes) -> list[dict]:
    """MLP runs on digits, batch 16, augmented with ``augmentation`` (None: not augmented)."""
    settings = dict(datasets=["digits"], dataset_options={}, architectures=["mlp"], batch_sizes=[16],
                    learning_rates=list(lrs), seeds=list(seeds), budget={"steps": steps}, evaluation={"points": 3},
                    optimizer={"momentum": 0.9}, **({"augmentation": {"digits": augmentation}} if augmentation else {}))
    return tiny_specs(**{**settings, **changes})


# -- the crop and the flip ------------------------------------------------------------------------------

def images(n=64, c=3, h=6, w=7) -> torch.Tensor:
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1  # no pixel is 0, as padding is


def test_the_centre_window_unflipped_is_the_image_and_flipped_its_mirror():
    x, p = images(), 3
    centre = torch.full((len(x), 2), p)
    out = augment.crop_flip(x, p, centre, torch.zeros(len(x), dtype=torch.bool))
    assert out.shape == x.shape and out.is_contiguous() and torch.equal(out, x)
    assert torch.equal(augment.crop_flip(x, p, centre, torch.ones(len(x), dtype=torch.bool)), x.flip(-1))
    assert torch.equal(augment.crop_flip(x, p, centre, None), x)


def test_every_crop_is_a_window_of_the_padded_image_mirrored_where_flipped():
    x, p = images(), 2
    offsets, flips = augment.decode(augment.draw(torch.Generator(), 5, 0, len(x), p, True), p, True)
    out = augment.crop_flip(x, p, offsets, flips)
    padded = F.pad(x, (p, p, p, p))
    for i, ((dy, dx), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        window = padded[i, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
        assert torch.equal(out[i], window.flip(-1) if flip else window), i
    assert (out == 0).any()  # some windows reach into the padding


def test_flips_alone_mirror_without_cropping():
    x = images()
    offsets, flips = augment.decode(augment.draw(torch.Generator(), 1, 3, len(x), 0, True), 0, True)
    assert (offsets == 0).all() and flips.any() and not flips.all()
    out = augment.crop_flip(x, 0, offsets, flips)
    assert torch.equal(out[flips], x[flips].flip(-1)) and torch.equal(out[~flips], x[~flips])


def test_draws_cover_every_offset_in_range_and_flip_about_half():
    p, n = 4, 20000
    offsets, flips = augment.decode(augment.draw(torch.Generator(), 0, 0, n, p, True), p, True)
    assert offsets.shape == (n, 2) and int(offsets.min()) == 0 and int(offsets.max()) == 2 * p
    windows = torch.unique(offsets[:, 0] * (2 * p + 1) + offsets[:, 1])
    assert len(windows) == (2 * p + 1) ** 2  # every window drawn
    assert 0.47 < flips.float().mean() < 0.53
    # crops without flips draw no flips
    assert augment.decode(augment.draw(torch.Generator(), 0, 0, 10, p, False), p, False)[1] is None


# -- the stream -----------------------------------------------------------------------------------------

def test_seeds_and_steps_draw_their_own_crops_and_a_draw_repeats_exactly():
    aug = lambda seed: augment.Augmenter(ON, [seed], CPU)  # noqa: E731
    x = images(32, 1, 8, 8)
    assert torch.equal(aug(0)(x, 7), aug(0)(x, 7))
    assert not torch.equal(aug(0)(x, 7), aug(1)(x, 7))
    assert not torch.equal(aug(0)(x, 7), aug(0)(x, 8))
    seeds = {augment.step_seed(s, t) for s in range(20) for t in range(500)}
    assert len({s & 0xFFFFFFFF for s in seeds}) == 20 * 500  # distinct even in the 32 bits a CPU generator reads


def test_a_packs_augmenter_gives_each_member_the_draws_of_its_run_alone():
    k, b, x = 3, 16, images(48, 1, 8, 8)
    together = augment.Augmenter(ON, [4, 0, 9], CPU)(x, 11)
    for i, seed in enumerate([4, 0, 9]):
        alone = augment.Augmenter(ON, [seed], CPU)(x[i * b:(i + 1) * b], 11)
        assert torch.equal(together[i * b:(i + 1) * b], alone), i
    assert together.shape == x.shape and k * b == len(x)


def test_runs_without_augmentation_get_no_augmenter():
    assert augment.for_specs(digits_specs(None), CPU) is None
    assert augment.for_specs(digits_specs(), CPU).seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="share their augmentation"):
        augment.for_specs(digits_specs(seeds=[0]) + digits_specs(None, seeds=[1]), CPU)


# -- the engines ----------------------------------------------------------------------------------------

def recorded_batches(module, monkeypatch) -> list[torch.Tensor]:
    """The inputs of every training step ``module`` (batchlab.sequential or batchlab.batched) takes."""
    seen: list[torch.Tensor] = []
    step = module.training_step

    def recording(model, optimizer, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return step(model, optimizer, x, *args, **kwargs)

    monkeypatch.setattr(module, "training_step", recording)
    return seen


def test_each_member_of_a_batched_pack_trains_on_the_batches_of_its_run_alone(digits, monkeypatch):
    specs = digits_specs(lrs=(0.02, 0.05), seeds=(0, 1))  # 4 members: two seeds, two learning rates
    together = recorded_batches(batched, monkeypatch)
    batched.train_batched(specs, digits, CPU)
    alone = recorded_batches(sequential, monkeypatch)
    for i, spec in enumerate(specs):
        alone.clear()
        sequential.train_run(spec, digits, CPU)
        assert len(alone) == len(together) == spec["steps"]
        for t, (a, b) in enumerate(zip(together, alone)):
            assert torch.equal(a[i], b), (i, t)  # bitwise the same crops and flips
    plain = digits["x_train"][training.batch_indices(len(digits["x_train"]), 16, specs[0]["steps"], 1_000_003)]
    assert not torch.equal(alone[0], plain[0]) and (alone[0] == plain[0]).float().mean() < 0.5  # augmented
    for i, j in ((0, 1), (0, 2)):  # members of one seed draw alike, whatever their learning rates
        assert torch.equal(together[0][i], together[0][j]) == (specs[i]["seed"] == specs[j]["seed"])


def test_batched_members_equal_their_runs_alone_in_float64(digits):
    # the engines sum in other orders: float64 shows the arithmetic is the same (as tests/test_batched.py)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tensors = {k: v.double() if v.is_floating_point() else v for k, v in digits.items()}
        specs = digits_specs()
        states: list = []
        together = batched.train_batched(specs, tensors, CPU, final_states=states)
        for spec, (history, _), state in zip(specs, together, states):
            alone_state: dict = {}
            alone, _ = sequential.train_run(spec, tensors, CPU, final_state=alone_state)
            assert (history["train_loss"] - alone["train_loss"]).abs().max() < 1e-10
            assert max(float((state[n] - v).abs().max()) for n, v in alone_state.items()) < 1e-10
    finally:
        torch.set_default_dtype(previous)


def test_evaluation_never_augments(digits, monkeypatch):
    calls = []
    call = augment.Augmenter.__call__
    monkeypatch.setattr(augment.Augmenter, "__call__", lambda self, x, step: calls.append(step) or call(self, x, step))
    spec = digits_specs(seeds=[0], evaluation={"points": 3, "sharpness": {"epsilons": [0.001], "examples": 50}})[0]
    history, summary = sequential.train_run(spec, digits, CPU)
    assert calls == list(range(spec["steps"]))  # once per step: none in evaluations, noise scale or sharpness
    assert history["b_simple"].notna().any() and "final_sharpness_0.001" in summary


def test_augmentation_changes_training_and_seeds_stay_apart(digits):
    plain = sequential.train_run(digits_specs(None, seeds=[0])[0], digits, CPU)[0]
    on = [sequential.train_run(s, digits, CPU)[0] for s in digits_specs(seeds=[0, 1])]
    assert plain["train_loss"].iloc[0] == on[0]["train_loss"].iloc[0]  # the same initialization
    assert plain["train_loss"].iloc[-1] != on[0]["train_loss"].iloc[-1]
    assert on[0]["train_loss"].iloc[-1] != on[1]["train_loss"].iloc[-1]


def test_an_augmented_run_stopped_and_resumed_equals_the_run_uninterrupted(digits, tmp_path):
    spec = digits_specs(seeds=[3])[0]
    whole_state: dict = {}
    whole = sequential.train_run(spec, digits, CPU, final_state=whole_state)
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(spec, digits, CPU, checkpoints=StopAt(tmp_path, 17))
    state = Checkpointer(tmp_path).load(spec)
    resumed_state: dict = {}
    resumed = sequential.train_run(spec, digits, CPU, final_state=resumed_state, resume=state)
    assert_same_run(resumed, whole)
    assert_same_state(resumed_state, whole_state)


def test_an_augmented_batched_pack_stopped_and_resumed_equals_the_pack_uninterrupted(digits, tmp_path):
    specs = digits_specs()
    whole_states: list = []
    whole = batched.train_batched(specs, digits, CPU, final_states=whole_states)
    with pytest.raises(TrainingInterrupted):
        batched.train_batched(specs, digits, CPU, checkpoints=StopAt(tmp_path, 13))
    states = [Checkpointer(tmp_path).load(s) for s in specs]
    assert [s["step"] for s in states] == [13] * 3
    resumed_states: list = []
    resumed = batched.train_batched(specs, digits, CPU, final_states=resumed_states, resume=states)
    for i in range(3):
        assert_same_run(resumed[i], whole[i])
        assert_same_state(resumed_states[i], whole_states[i])


def test_a_run_with_a_batch_schedule_augments_each_steps_batch_and_resumes_exactly(digits, monkeypatch, tmp_path):
    schedule = {"kind": "drop", "small_batch": 4, "steps": 3, "patience": 2, "min_delta": 0.2, "ema": 0.5, "max_drops": 3}
    spec = [s for s in digits_specs(seeds=[0], steps=40, variants={"v": {"batch_schedule": schedule}})
            if "variant" in s][0]
    assert spec["augmentation"] == ON  # a variant inherits its dataset's augmentation
    seen = recorded_batches(sequential, monkeypatch)
    whole = sequential.train_run(spec, digits, CPU)
    drops = json.loads(whole[1]["batch_drop_steps"])
    assert drops and len(seen[drops[0]]) == 4 and len(seen[0]) == 16
    stop = drops[0] + 1  # in the middle of the first drop
    with pytest.raises(TrainingInterrupted):
        sequential.train_run(spec, digits, CPU, checkpoints=StopAt(tmp_path, stop))
    seen.clear()
    resumed = sequential.train_run(spec, digits, CPU, resume=Checkpointer(tmp_path).load(spec))
    assert_same_run(resumed, whole)
    assert len(seen) == spec["steps"] - stop


def test_the_hardware_sweep_times_the_augmented_step(digits, monkeypatch):
    calls = []
    call = augment.Augmenter.__call__
    monkeypatch.setattr(augment.Augmenter, "__call__", lambda self, x, step: calls.append(len(x)) or call(self, x, step))
    build = lambda: models.build("mlp", (1, 8, 8), 10, {})  # noqa: E731
    sgd = {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    hardware.measure_batch(build, sgd, digits["x_train"], digits["y_train"], 8, CPU, warmup_steps=1, repeats=2)
    assert calls == []
    hardware.measure_batch(build, sgd, digits["x_train"], digits["y_train"], 8, CPU, warmup_steps=1, repeats=2,
                           augmentation=ON)
    assert calls == [8] * 5  # the two memory steps, the warm-up and the timed ones
    assert grid.hardware_settings(digits_specs(), "digits", "mlp")["augmentation"] == ON
    assert "augmentation" not in grid.hardware_settings(digits_specs(None), "digits", "mlp")


# -- run ids and the config -----------------------------------------------------------------------------

def test_only_augmented_runs_carry_augmentation_and_change_their_ids():
    plain, on = digits_specs(None), digits_specs()
    assert all("augmentation" not in s for s in plain)
    assert [s["augmentation"] for s in on] == [ON] * 3
    assert {s["run_id"] for s in plain}.isdisjoint(s["run_id"] for s in on)
    flip_only = digits_specs({"flip": True})
    assert flip_only[0]["augmentation"] == {"crop_padding": 0, "flip": False} | {"flip": True}
    assert flip_only[0]["run_id"] not in {s["run_id"] for s in on}
    # a study with augmentation of another dataset leaves the ids of the others as they were
    both = tiny_specs(datasets=["mnist1d", "digits"], dataset_options={}, architectures=["mlp"], augmentation={"digits": ON})
    alone = tiny_specs(datasets=["mnist1d"], dataset_options={}, architectures=["mlp"])
    assert [s["run_id"] for s in both if s["dataset"] == "mnist1d"] == [s["run_id"] for s in alone]


def test_the_gpu_study_augments_cifar10_as_the_published_results_do():
    from studies import ROOT

    c = config.load(ROOT / "configs/cifar10_gpu.yaml")
    assert c["augmentation"] == {"cifar10": {"crop_padding": 4, "flip": True}}
    assert config.load(ROOT / "config.yaml")["augmentation"] == {}


def invalid(augmentation, **changes) -> str:
    raw = dict(TINY, datasets=["digits"], dataset_options={}, architectures=["cnn"], augmentation=augmentation)
    raw.update(changes)
    with pytest.raises(config.ConfigError) as error:
        config.validate(raw)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("augmentation, starts, words", [
    ({"digits": {"crop_padding": -1}}, "'augmentation.digits.crop_padding'", "an integer >= 0"),
    ({"digits": {"crop_padding": 8}}, "'augmentation.digits.crop_padding'", "image size 8 of 'digits'; allowed: 0 to 7"),
    ({"digits": {"crop_padding": 1.5}}, "'augmentation.digits.crop_padding'", "an integer"),
    ({"digits": {"flip": "yes"}}, "'augmentation.digits.flip'", "true or false"),
    ({"digits": {"padding": 4}}, "unknown key 'padding'", "in 'augmentation.digits'; allowed keys: crop_padding, flip"),
    ({"digits": {"crop_padding": 0, "flip": False}}, "'augmentation.digits'", "augments nothing"),
    ({"digits": {}}, "'augmentation.digits'", "augments nothing"),
    ({"imagenet": {"flip": True}}, "'augmentation.imagenet'", "unknown dataset 'imagenet'"),
])
def test_bad_augmentation_is_one_line_naming_its_key(augmentation, starts, words):
    message = invalid(augmentation)
    assert message.startswith(starts) and words in message, message


def test_only_image_datasets_may_be_augmented():
    message = invalid({"mnist1d": {"flip": True}}, datasets=["mnist1d"], dataset_options={}, architectures=["mlp"])
    assert message.startswith("'augmentation.mnist1d'") and "(1, 40)" in message and "cifar10" in message


def test_augmentation_of_a_dataset_not_in_the_study_is_dropped_with_a_warning():
    warnings: list[str] = []
    c = config.validate(dict(TINY, augmentation={"cifar10": {"crop_padding": 4, "flip": True}}), warn=warnings.append)
    assert c["augmentation"] == {} and len(warnings) == 1
    assert warnings[0].startswith("'augmentation.cifar10'") and "ignored" in warnings[0]
