import math

import pytest

from gpt2driver.protocol import (ProtocolError, parse_ids, parse_line, parse_output, parse_top3,
                                 reps_frame, stages_frame, tokens_per_s, vsteps_frame)


def test_generation_output(fixture_text):
    res = parse_output(fixture_text("kvonly_b4.txt"))
    assert res.done == 0 and res.ok and res.errors == []
    c = res.config
    assert c["program"] == "kvonly" and c["B"] == 4 and c["gen"] == 32 and c["maxT"] == 1024
    assert c["device"] == "NVIDIA H100 80GB HBM3"
    assert isinstance(c["top_p"], int) and c["checkpoint"].endswith("_bf16.bin")
    assert res.memory["total_bytes"] == (res.memory["weights_bytes"] + res.memory["kv_bytes"]
                                         + res.memory["act_bytes"])
    assert len(res.reps) == 4 and len(res.timed_reps()) == 3
    assert res.reps[0]["warmup"] == 1 and isinstance(res.reps[1]["total_ms"], float)
    assert res.timing["reps"] == 3
    assert sorted(res.tokens) == [0, 1, 2, 3]
    prompt, ids = res.tokens[2]
    assert prompt == [50256] and len(ids) == 32 and all(isinstance(i, int) for i in ids)
    assert res.text[0].startswith("kvonly:") and "row 0: <|endoftext|> ..." in res.text


def test_tokens_per_s_matches_timing(fixture_text):
    res = parse_output(fixture_text("kvonly_b4.txt"))
    tps = tokens_per_s(res)
    assert tps["min"] <= tps["median"] <= tps["max"]
    assert tps["median"] == pytest.approx(res.timing["tokens_per_s"], rel=1e-4)


def test_quiet_output_has_no_text(fixture_text):
    res = parse_output(fixture_text("optimized_b1_quiet.txt"))
    assert res.text == [] and res.done == 0 and len(res.tokens) == 1


def test_validate_outputs(fixture_text):
    ok = parse_output(fixture_text("validate_pass.txt"))
    assert ok.done == 0 and [s["result"] for s in ok.vsummary] == ["PASS", "PASS"]
    bad = parse_output(fixture_text("validate_fail.txt"))
    assert bad.done == 1 and not bad.ok
    assert {s["variant"]: s["result"] for s in bad.vsummary} == {"kvonly": "PASS", "optimized": "FAIL"}
    df = vsteps_frame(bad)
    assert len(df) == 16 and {"variant", "step", "max_abs", "match", "ref_top3"} <= set(df.columns)
    worst = df.sort_values("max_abs").iloc[-1]
    assert worst["variant"] == "optimized" and worst["match"] == 0
    assert len(parse_top3(worst["ref_top3"])) == 3


def test_profile_output(fixture_text):
    res = parse_output(fixture_text("profile_builtin.txt"))
    df = stages_frame(res)
    assert list(df["name"])[:3] == ["ln1", "qkv", "attn"]
    assert df["share"].sum() == pytest.approx(1.0, abs=1e-3)
    assert res.profile["variant"] == "optimized" and res.profile["steps"] == 16


def test_error_outputs(fixture_text):
    res = parse_output(fixture_text("error_input.txt"))
    assert res.done == 3 and not res.ok
    assert "bad magic" in res.error_message
    oom = parse_output(fixture_text("error_oom.txt"))
    assert oom.done == 4 and "MiB" in oom.errors[0] and oom.config["B"] == 512


def test_reps_frame(fixture_text):
    df = reps_frame(parse_output(fixture_text("naive_b1.txt")))
    assert list(df["index"]) == [0, 1, 2, 3] and df["warmup"].sum() == 1


def test_quoted_values_and_escapes():
    rec, f = parse_line(r'##GPT2D 1 error msg="a \"quoted\" word, a back\\slash and = sign" code=7')
    assert rec == "error"
    assert f["msg"] == 'a "quoted" word, a back\\slash and = sign'
    assert f["code"] == 7


def test_numbers_and_strings():
    _, f = parse_line('##GPT2D 1 x a=12 b=-3.5 c=1e-05 d=inf e=nan f=word g="42" checkpoint=123')
    assert f["a"] == 12 and isinstance(f["a"], int)
    assert f["b"] == -3.5 and f["c"] == 1e-05 and math.isinf(f["d"]) and math.isnan(f["e"])
    assert f["f"] == "word"
    assert f["g"] == "42"  # quoted values stay text
    assert f["checkpoint"] == "123"  # path-like keys stay text


def test_human_lines_are_not_records():
    assert parse_line("hello ##GPT2D 1 config") is None
    assert parse_line("") is None


def test_unknown_records_and_keys_are_ignored():
    text = ("##GPT2D 1 config program=kvonly B=2 shiny_new_key=yes\n"
            "##GPT2D 1 hologram depth=3\n"
            "##GPT2D 1 done status=0\n")
    res = parse_output(text)
    assert res.config["B"] == 2 and res.done == 0


def test_other_protocol_version_is_rejected():
    with pytest.raises(ProtocolError, match="version 2"):
        parse_output("##GPT2D 2 config B=1\n##GPT2D 2 done status=0\n")


@pytest.mark.parametrize("line", [
    "##GPT2D",
    "##GPT2D 1",
    "##GPT2D one config B=1",
    "##GPT2Dx 1 config B=1",
    "##GPT2D 1 config novalue",
    "##GPT2D 1 config =5",
    '##GPT2D 1 error msg="unterminated',
    '##GPT2D 1 error msg="bad \\q escape"',
    '##GPT2D 1 error msg="x"y',
    '##GPT2D 1 config a=b"c',
    "##GPT2D 1 done status=zero",
])
def test_garbled_lines(line):
    with pytest.raises(ProtocolError):
        parse_output(line + "\n##GPT2D 1 done status=0\n")


def test_missing_done():
    text = "##GPT2D 1 config B=1\n##GPT2D 1 rep index=0 warmup=0 total_ms=1\n"
    with pytest.raises(ProtocolError, match="done"):
        parse_output(text)
    assert parse_output(text, require_done=False).done is None


def test_id_lists():
    assert parse_ids("") == [] and parse_ids(50256) == [50256] and parse_ids("1,2,3") == [1, 2, 3]
    res = parse_output('##GPT2D 1 tokens row=0 prompt=50256 ids=""\n##GPT2D 1 done status=0\n')
    assert res.tokens == {0: ([50256], [])}
    with pytest.raises(ProtocolError):
        parse_ids("1,x")


def test_to_dict_is_json_serialisable(fixture_text):
    import json

    d = parse_output(fixture_text("kvonly_b4.txt")).to_dict()
    assert json.loads(json.dumps(d))["tokens"]["0"]["prompt"] == [50256]
