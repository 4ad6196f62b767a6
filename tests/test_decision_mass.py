"""The exact probability of the empty think block under a decoding: warping as the sampler
does (checked against Hugging Face's own sampler), positions right under padding."""

import math

import pytest
import torch

from jobs.evaluation.decision_mass import (continuation_probability, empty_think_probability, empty_think_tokens,
                                           sampled_probability)


def test_temperature_top_p_and_greedy_on_constructed_logits():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(1, 2, 4)  # two positions, the same distribution
    one = lambda tok, *dec: sampled_probability(logits[:, :1], torch.tensor([[tok]]), *dec).item()  # noqa: E731
    assert one(1, 1.0) == pytest.approx(0.3)
    # both positions: the product
    assert sampled_probability(logits, torch.tensor([[0, 1]]), 1.0).item() == pytest.approx(0.15)
    # top-p 0.8 keeps {0.5, 0.3} (the dropped tail holds 0.2 <= 1 - 0.8) and renormalizes
    assert one(1, 1.0, 0.8) == pytest.approx(0.3 / 0.8)
    assert one(2, 1.0, 0.8) == 0.0
    # T 0.5 squares the probabilities before renormalizing
    assert one(1, 0.5) == pytest.approx(0.09 / (0.25 + 0.09 + 0.0225 + 0.0025))
    assert one(0, 1.0, 1.0, 1) == pytest.approx(1.0) and one(1, 1.0, 1.0, 2) == pytest.approx(0.3 / 0.8)
    assert (one(0, 0), one(1, 0)) == (1.0, 0.0)  # greedy: the argmax or nothing
    assert sampled_probability(logits, torch.tensor([[0, 1]]), 0).item() == 0.0


def test_matches_what_the_hugging_face_sampler_draws_from(tiny_lm):
    """For the tokens HF's sampler actually drew, the probability of drawing them is the
    product of the sampler's own warped distributions (its output scores): an independent
    check of the warping and of the logit positions, on prompts of different lengths
    batched together (padding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    with torch.no_grad():  # peaked distributions, as a trained model's: the nucleus cut matters
        model.get_output_embeddings().weight.mul_(40)
    torch.manual_seed(0)
    prefixes = [tok(t, add_special_tokens=False)["input_ids"] for t in ("hello there", "a much longer prompt about cake",
                                                                        "x")]
    seen = []
    for temperature, top_p in ((1.0, 0.95), (0.6, 0.9), (1.3, 1.0)):
        for prefix in prefixes:
            gen = model.generate(input_ids=torch.tensor([prefix]), attention_mask=torch.ones(1, len(prefix), dtype=torch.long),
                                 do_sample=True, temperature=temperature, top_p=top_p, top_k=None, max_new_tokens=3,
                                 min_new_tokens=3, output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=tok.pad_token_id or 0)
            drawn = gen.sequences[0, len(prefix):].tolist()
            expected = math.prod(torch.softmax(s[0].float(), -1)[t].item() for s, t in zip(gen.scores, drawn))
            batch = continuation_probability(model, prefixes, drawn, [(temperature, top_p), (0, 1.0)], batch_size=3,
                                             pad_id=tok.pad_token_id or 0)
            got = batch[prefixes.index(prefix), 0]
            assert got == pytest.approx(expected, rel=1e-3), (temperature, top_p, prefix)
            seen.append(expected)
            # one prefix at a time gives the same numbers: the padding moved nothing
            alone = continuation_probability(model, [prefix], drawn, [(temperature, top_p)])
            assert alone[0, 0] == pytest.approx(got, rel=1e-4)
    assert max(seen) > 0.01  # draws the model found likely, not a near-uniform tail
    # greedy: 1 for the model's own greedy continuation, 0 for another
    prefix = prefixes[1]
    greedy = model.generate(input_ids=torch.tensor([prefix]), do_sample=False, max_new_tokens=2, min_new_tokens=2,
                            pad_token_id=tok.pad_token_id or 0)[0, len(prefix):].tolist()
    other = [(greedy[0] + 1) % model.config.vocab_size, greedy[1]]
    assert continuation_probability(model, [prefix], greedy, [(0, 1.0)])[0, 0] == 1.0
    assert continuation_probability(model, [prefix], other, [(0, 1.0)])[0, 0] == 0.0
    with pytest.raises(ValueError, match="empty continuation"):
        continuation_probability(model, [prefix], [], [(1.0, 1.0)])


def test_empty_think_probability_reads_the_tokens_after_t_star(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.templates import render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    close = empty_think_tokens(tok)
    assert tok.decode(close) == "\n</think>"
    prompts = ["How do I bake bread?", "Tell me a story about a dragon who cannot fly"]
    got = empty_think_probability(model, tok, prompts, [(1.0, 1.0), (0.6, 0.95)])
    assert got.shape == (2, 2) and ((got[:, 0] > 0) & (got[:, 0] < 1)).all() and ((got >= 0) & (got <= 1)).all()
    # the same number from the CoT-on generation prompt's own tokens
    ids = render_prompt(tok, prompts[0], cot=True).input_ids
    assert continuation_probability(model, [ids], close, [(1.0, 1.0)])[0, 0] == pytest.approx(got[0, 0], rel=1e-5)


def _bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import decision_mass

    return decision_mass


def test_bench_tallies_expected_against_observed_and_pairs_lambda_by_seed():
    dm = _bench()

    def row(set_, source, prompt, thinking="", answer="comply"):
        return {"set": set_, "source": source, "prompt": prompt, "thinking": thinking,
                "judges": {"string_match": {"answer": answer}}}

    rows = [row("harmful", "advbench", "h1"), row("harmful", "advbench", "h2", thinking="step 1"),
            row("harmful", "advbench", "h3", answer="refuse"), row("harmful", "advbench", "h4", answer="refuse"),
            row("benign", "alpaca", "a1", thinking="ok", answer="comply"),
            row("benign", "borderline-heldout", "b1", answer="refuse"), {"set": "reasoning", "prompt": "r1"}]
    p = {"h1": 0.9, "h2": 0.2, "h3": 0.95, "h4": 0.7, "a1": 0.05, "b1": 0.8}
    cells: dict = {}
    dm.tally(cells, "aligned", "cot_on/t1.0", rows, p, "string_match")
    dm.tally(cells, "extra", "cot_on/t1.0", rows, p, "string_match", sampled=False)
    recs = {(r["group"], r["source"]): r for r in dm.records_of(cells, "string_match")}
    h = recs[("aligned", "harmful")]
    assert h["n"] == 4 and h["expected_count"] == pytest.approx(2.75)
    assert (h["observed_empty_think"]["k"], h["asr_thought_first"]["k"]) == (3, 1)
    assert h["expected_within_interval"] is True
    assert recs[("aligned", "borderline-heldout")]["expected_empty_think"] == pytest.approx(0.8)
    assert "observed_empty_think" not in recs[("extra", "harmful")]  # prompts only: nothing observed

    # the score orders h3 > h1 > b1 > h4 > h2 > a1: against borderline 2 of 4 harmful above it
    sep = dm.separation_of(rows, p)
    assert sep["borderline-heldout"]["auroc"] == pytest.approx(0.5)
    assert sep["alpaca"]["auroc"] == 1.0
    # refusing at most 5% of the one borderline prompt means refusing only above 0.8: h4, h2 pass
    assert (sep["borderline-heldout"]["asr_at_95pct_pass"]["k"], sep["borderline-heldout"]["asr_at_95pct_pass"]["n"]) \
        == (2, 4)
    variants = {"aligned@s0": {"group": "aligned", "seed": 0}, "lambda0@s0": {"group": "lambda0", "seed": 0},
                "aligned@s1": {"group": "aligned", "seed": 1}, "base": {"group": "base", "seed": 0}}
    worse = dm.separation_of(rows, {**p, "h1": 0.1})
    pairs = dm.lambda_pairs(variants, {"aligned@s0": sep, "lambda0@s0": worse, "aligned@s1": sep})
    assert [(q["seed"], q["source"]) for q in pairs] == [(0, "alpaca"), (0, "borderline-heldout")]  # s1 has no twin
    assert pairs[1]["difference"] == pytest.approx(0.5 - 0.25)
