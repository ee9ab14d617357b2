"""The plain-language part of an evaluation report: which recognizers still recognise the
people of the run, in words, with counts and a 95 % interval per cell.

It reads the ``abuse`` records (identification top-1 against one clean enrolled photo
per person): a recognizer "still recognises" the people when its top-1 on the protected
photos is above chance (one in the number of people) by more than the interval's width;
"no better than guessing" when the interval reaches chance.
"""
from __future__ import annotations

from pathlib import Path

from photoveil.evaluation.config import EvalConfig
from photoveil.evaluation.metrics import wilson


STILL = "still recognises you"
GUESSING = "is no better than guessing who you are"


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def _cells(records: list[dict]) -> list[dict]:
    """One row per (authorized setting, recognizer) of the unattacked abuse records."""
    sel = [r for r in records if r.get("attack") == "abuse" and r.get("transform", "none") == "none"
           and r.get("role") in ("authorized", "unauthorized")]
    rows = {}
    for r in sel:
        key = (r["authorized"], r["evaluated_model"])
        row = rows.setdefault(key, {"authorized": r["authorized"], "model": r["evaluated_model"], "role": r["role"]})
        if r["metric"] in ("top1", "clean_top1"):
            row[r["metric"]] = r["value"]
            row["n"] = r["n"]
    return [r for r in rows.values() if "top1" in r and r.get("n")]


def verdict(top1: float, n: int, people: int) -> str:
    """``still recognises you`` / ``is no better than guessing who you are`` for a top-1 of
    ``n`` probes among ``people``."""
    chance = 1.0 / max(1, people)
    lo, _ = wilson(top1, n)
    return STILL if lo > chance else GUESSING


def plain_lines(cfg: EvalConfig, records: list[dict], extras: dict) -> list[str]:
    """The report in sentences (printed by ``photoveil evaluate --data``)."""
    data = extras.get("data", {})
    people = int(data.get("identities", 0))
    lines = []
    photos = extras.get("photos")
    if photos:
        lines.append(f"Your photos: {photos['people']} people, {photos['photos']} photos under {photos['root']}; "
                     f"{data.get('test_images', 0)} photos of {people} people measured "
                     f"({data.get('queries', 0)} protected probes against one clean photo per person).")
        if photos["skipped"]:
            lines.append(f"  Left out ({len(photos['skipped'])}): " + "; ".join(
                f"{Path(p).name}: {why}" for p, why in list(photos["skipped"].items())[:10]))
        if photos["several_faces"]:
            lines.append(f"  {len(photos['several_faces'])} photo(s) show several faces; the largest was taken "
                         "as the person of the folder.")
    method = cfg.method if cfg.method != "none" else "no protection"
    lines.append(f"Protection: {method}" + (f" (preset {cfg.preset})" if cfg.preset and cfg.method != "none" else "")
                 + f"; chance is 1 in {people} ({_pct(1 / max(1, people))}).")
    for row in _cells(records):
        n, top1 = row["n"], row["top1"]
        lo, hi = wilson(top1, n)
        hits = round(top1 * n)
        clean = row.get("clean_top1")
        was = f"; unprotected {round(clean * n)} of {n}" if clean is not None else ""
        who = "the service you protect for" if row["role"] == "authorized" else "an unauthorized recognizer"
        v = verdict(top1, n, people)
        lines.append(f"- {row['model']} ({who}) {v}: right on {hits} of {n} protected photos "
                     f"({_pct(top1)}, 95 % CI {_pct(lo)}-{_pct(hi)}){was}.")
        if clean is not None and verdict(clean, n, people) != STILL:
            lines.append(f"  (it does not recognise these people reliably even unprotected: "
                         f"{_pct(clean)}; its row says little)")
    lines.append("Measured against off-the-shelf recognizers that never saw a protected photo; an attacker "
                 "who adapts to the protection is another question (docs/threat-model.md).")
    return lines


def plain_markdown(cfg: EvalConfig, records: list[dict], extras: dict, examples: list[str]) -> str:
    """``## In plain words`` for ``results.md``, with the example sheets linked."""
    blocks: list[list[str]] = []
    for ln in plain_lines(cfg, records, extras):
        if ln.startswith("  ") and blocks:
            blocks[-1][-1] += " " + ln.strip()       # a note on the line above
        elif ln.startswith("- ") and blocks and blocks[-1][-1].startswith("- "):
            blocks[-1].append(ln)                   # the next item of a list
        else:
            blocks.append([ln])
    out = ["## In plain words", ""] + ["\n".join(b) + "\n" for b in blocks]
    if examples:
        out += ["Examples (top: the photo as found and aligned; bottom: what is uploaded):", ""]
        out += [f"![{e}]({e})" for e in examples]
    return "\n".join(out) + "\n"


__all__ = ["GUESSING", "STILL", "plain_lines", "plain_markdown", "verdict"]
