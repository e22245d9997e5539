import pytest

from gpt2driver.experiments.configs import (ConfigError, configs_dir, default_config, load_config,
                                            parse_config)
from gpt2driver.experiments.points import expand, point_id

ALL_CONFIGS = sorted(configs_dir().glob("*.yaml"))


def test_configs_exist():
    names = {p.stem for p in ALL_CONFIGS}
    assert {"gpt2_optim", "precision", "model_sizes", "profile"} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_expands(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.source == path
    points = expand(cfg)
    assert points and len({p["id"] for p in points}) == len(points)


def test_default_config():
    cfg = default_config()
    assert cfg.name == "gpt2_optim"
    assert cfg.variants == ["naive", "kvonly", "optimized"]
    assert cfg.batch == [1, 4, 16] and cfg.gen == [512] and cfg.prompt_len == [1]
    assert cfg.precisions == ["BF16"] and cfg.warmup == 1 and cfg.repeat == 3
    assert cfg.sampling == {"greedy": True} and cfg.models == ["gpt2"]
    points = expand(cfg)
    assert len(points) == 9
    assert [(p["variant"], p["batch"]) for p in points[:4]] == [
        ("naive", 1), ("kvonly", 1), ("optimized", 1), ("naive", 4)]


def test_other_configs():
    prec = load_config(configs_dir() / "precision.yaml")
    assert prec.precisions == ["FP32", "FP16", "BF16"] and prec.variants == ["kvonly", "optimized"]
    sizes = load_config(configs_dir() / "model_sizes.yaml")
    assert sizes.models == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"] and sizes.batch == [1, 16]
    prof = load_config(configs_dir() / "profile.yaml")
    assert prof.profile["tool"] == "ncu" and prof.profile["steps"] == 16 and prof.profile["metrics"]
    assert prof.variants == ["optimized"] and prof.batch == [1, 16]


def test_defaults_and_scalars():
    cfg = parse_config({"name": "x", "precision": "fp16", "batch": 8, "variants": "kvonly"})
    assert cfg.precisions == ["FP16"] and cfg.batch == [8] and cfg.variants == ["kvonly"]
    assert cfg.models == ["gpt2"] and cfg.gen == [64] and cfg.prompt_len == [1] and cfg.repeat >= 1


def test_point_ids_are_stable_and_sensitive():
    cfg = parse_config({"name": "x", "batch": [1, 2]})
    a, b = expand(cfg), expand(parse_config({"name": "other", "batch": [1, 2]}))
    assert [p["id"] for p in a] == [p["id"] for p in b]  # the name is not part of a point
    assert point_id(a[0]) == a[0]["id"]
    c = expand(parse_config({"name": "x", "batch": [1, 2], "repeat": 5}))
    assert not {p["id"] for p in a} & {p["id"] for p in c}


def test_sampling():
    cfg = parse_config({"sampling": {"temperature": 0.8, "top_k": 40}})
    assert cfg.sampling == {"greedy": False, "temperature": 0.8, "top_k": 40, "top_p": 1.0}
    p = expand(cfg)[0]
    assert p["sampling"] == "sample" and p["temperature"] == 0.8


@pytest.mark.parametrize("data, words", [
    ({"batchsize": [1]}, ["batchsize", "allowed keys", "batch"]),
    ({"precision": ["BF16", "INT4"]}, ["precision", "INT4", "FP32, FP16, BF16"]),
    ({"variants": ["naive", "turbo"]}, ["variants", "turbo", "naive, kvonly, optimized"]),
    ({"batch": [1, 0]}, ["batch", ">= 1"]),
    ({"batch": []}, ["batch", "empty"]),
    ({"gen": ["many"]}, ["gen", "integer"]),
    ({"repeat": 0}, ["repeat", ">= 1"]),
    ({"warmup": -1}, ["warmup"]),
    ({"timeout_s": 0}, ["timeout_s"]),
    ({"model": "gpt3"}, ["model", "gpt3", "gpt2-xl"]),
    ({"model": "gpt2", "checkpoint": "x.bin"}, ["model", "checkpoint"]),
    ({"sampling": "beam"}, ["sampling", "greedy"]),
    ({"sampling": {"temp": 1}}, ["sampling", "temp", "temperature"]),
    ({"sampling": {"top_p": 1.5}}, ["sampling.top_p"]),
    ({"profile": {"tool": "perf"}}, ["profile.tool", "nsys, ncu, builtin"]),
    ({"name": "../evil"}, ["name"]),
    (["not", "a", "mapping"], ["mapping"]),
])
def test_errors_name_the_key(data, words):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    for w in words:
        assert w in str(e.value)


def test_too_long_for_the_context():
    from gpt2driver.errors import RequestError

    cfg = parse_config({"prompt_len": [1, 600], "gen": [512]})
    with pytest.raises(RequestError, match="max_seq_len 1024") as e:  # a request error: exit 2
        expand(cfg)
    assert e.value.exit_code == 2


def test_config_with_a_model_file(tmp_path):
    from gpt2driver.files.checkpoint import ModelConfig, make_random_checkpoint

    ck = tmp_path / "tiny.bin"
    make_random_checkpoint(ck, ModelConfig.custom(1, 1, 32, max_seq_len=64, vocab_size=300), dtype="fp32")
    cfg = parse_config({"checkpoint": str(ck), "gen": [32]})
    points = expand(cfg)
    assert points[0]["model"] == "tiny.bin" and points[0]["checkpoint"] == str(ck)
    from gpt2driver.errors import RequestError

    with pytest.raises(RequestError, match="max_seq_len 64"):
        expand(parse_config({"checkpoint": str(ck), "gen": [64]}))
    with pytest.raises(ConfigError, match="checkpoint"):
        expand(parse_config({"checkpoint": str(tmp_path / "missing.bin")}))


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("variants: [fast]\n")
    with pytest.raises(ConfigError, match="wrong.yaml: variants"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).name == "empty"
