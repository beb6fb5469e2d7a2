"""What a finished stage's counts mean for its exit status: a run in which every input
record was rejected, or in which damaged input lost data, wrote correct outputs but
must not end as a success without a word."""
from __future__ import annotations

import json
import re

from curation.io import DAMAGE_CAUSES, iter_rows
from pipelines.errors import StageOutcomeError


# per cause of a total rejection: what usually went wrong and what to do about it
_LIKELY_FIX = {
    "malformed_json": "the input is not JSON Lines (a CSV or other format saved as .jsonl?)",
    "invalid_utf8": "the input is not UTF-8 text (convert it, e.g. with iconv)",
    "non_string_text": "the text field holds something other than a string: name the field "
                       "that holds the text with --text-field",
    "empty_text": "every text is empty: is --text-field the field that holds the text?",
    "too_large": "every record is over --max-doc-bytes: raise it if that is expected",
}


def _rejected_rows(fs, output: str):
    for path in sorted(fs.match(fs.join(output, "rejected", "*"))):
        yield from iter_rows(path, fs)


def _fields_of(raw_prefix: str | None) -> list[str]:
    """The top-level field names of a record, from the start of its raw text."""
    if not raw_prefix:
        return []
    try:
        obj = json.loads(raw_prefix)
        return sorted(obj) if isinstance(obj, dict) else []
    except ValueError:
        # cut off: take the names that open the record's top level
        return sorted(set(re.findall(r'[{,]\s*"([^"\\]{1,64})"\s*:', raw_prefix)))


def _total_rejection(counts: dict, text_field: str, first: dict | None) -> str:
    by_cause = counts.get("rejected_by_cause") or {}
    cause, n = max(by_cause.items(), key=lambda kv: kv[1]) if by_cause else ("unknown", 0)
    causes = ", ".join(f"{c}: {k}" for c, k in sorted(by_cause.items()))
    if cause == "missing_text":
        fields = _fields_of(first.get("raw_prefix") if first else None)
        seen = f" (the first record's fields: {', '.join(fields)})" if fields else ""
        fix = (f"no record has the text field {text_field!r}{seen}: name the field that "
               f"holds the text with --text-field")
    elif cause in DAMAGE_CAUSES:
        fix = "the input files could not be read (see rejected/ for each file and cause)"
    else:
        fix = _LIKELY_FIX.get(cause, "see rejected/ for each record's cause")
    where = f"; first: {first['file']}:{first['line']}" if first else ""
    return (f"every one of the {counts['input']} input records was rejected ({causes}{where}); "
            f"{fix}")


def check_stage_outcome(command: str, manifest: dict, fs, output: str, *, text_field: str = "text",
                        allow_damaged: bool = False, warn=print) -> None:
    """Raise StageOutcomeError when every input record was rejected, or when damaged input
    lost data and the user did not accept that (--allow-damaged); otherwise say on the
    console what damaged input was tolerated."""
    counts = manifest.get("counts") or {}
    n_in, n_rej = counts.get("input", 0), counts.get("rejected", 0)
    by_cause = counts.get("rejected_by_cause") or {}
    damaged = {c: k for c, k in by_cause.items() if c in DAMAGE_CAUSES and k}
    if not (n_in and n_rej == n_in) and not damaged:
        return
    first, damage_rows = None, []
    for row in _rejected_rows(fs, output):
        first = first or row
        if row.get("cause") in DAMAGE_CAUSES and len(damage_rows) < 5:
            damage_rows.append(row)
        if first and (len(damage_rows) >= 5 or not damaged):
            break
    if n_in and n_rej == n_in:
        raise StageOutcomeError(f"{command}: {_total_rejection(counts, text_field, first)}")
    lines = [f"{r['file']}: {r['cause']} at record {r['line']}" + (f" ({r['detail']})" if r.get("detail") else "")
             for r in damage_rows]
    more = sum(damaged.values()) - len(damage_rows)
    if more > 0:
        lines.append(f"... and {more} more (see {output}/rejected/)")
    what = "; ".join(f"{c}: {k}" for c, k in sorted(damaged.items()))
    if not allow_damaged:
        raise StageOutcomeError(
            f"{command}: damaged input lost data ({what}):\n  " + "\n  ".join(lines)
            + f"\nthe readable records were processed and written to {output}; to accept "
              f"the loss, rerun with --allow-damaged (the completed outputs are reused)")
    warn(f"{command}: warning: damaged input lost data ({what}), accepted by --allow-damaged:\n  "
         + "\n  ".join(lines))
