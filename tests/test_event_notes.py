"""Event notes within the API's limit, cut only between failures, with a count.

events.k8s.io/v1 refuses a note over 1 KiB (the Event is then lost, the
complaint against other tools in issue 23). A Deployment failing many Pod
Security controls in many containers easily says more than that: the note
keeps whole failures first, then whole remedies, and says how many of each
were left out.
"""

from __future__ import annotations

import re

import pytest

from magtape.notify.events import NOTE_MAX_BYTES, fit_note

FAILURES = [f'[FAIL] HIGH - container "c{i:02}" does not set securityContext.runAsNonRoot, '
            f"nor does the pod; restricted requires true (MT3015)" for i in range(30)]
FIXES = ["MT3015: Set runAsNonRoot: true on the pod (https://d.example/pss-run-as-non-root)",
         "MT3017: Set seccompProfile.type RuntimeDefault (https://d.example/pss-seccomp)"]


def test_a_short_note_is_the_message_and_its_fixes_unchanged() -> None:
    assert fit_note(FAILURES[:2], FIXES) == (", ".join(FAILURES[:2]) + " | How to fix: "
                                             + " | ".join(FIXES))


@pytest.mark.parametrize("count", [8, 9, 10, 30])
def test_a_long_note_keeps_whole_failures_and_counts_the_rest(count: int) -> None:
    note = fit_note(FAILURES[:count], FIXES)
    assert len(note.encode()) <= NOTE_MAX_BYTES
    match = re.fullmatch(r"(.*) \(\+(\d+) more failures and 2 more fixes left out\)", note)
    assert match, note
    kept = match.group(1).count("(MT3015)")
    assert match.group(1) == ", ".join(FAILURES[:kept])  # whole failures, in order, none cut
    assert kept >= 1 and kept + int(match.group(2)) == count


def test_fixes_are_kept_when_every_failure_fits() -> None:
    note = fit_note(FAILURES[:3], FIXES * 8)
    assert len(note.encode()) <= NOTE_MAX_BYTES
    assert note.startswith(", ".join(FAILURES[:3]) + " | How to fix: ")
    assert re.search(r" \(\+\d+ more fixes left out\)$", note)


def test_a_single_oversize_failure_is_cut_inside_with_the_count_of_the_others() -> None:
    huge = "[FAIL] HIGH - " + "é" * 900 + " (MT3001)"
    note = fit_note([huge, FAILURES[0]], [])
    assert len(note.encode()) <= NOTE_MAX_BYTES and "\ufffd" not in note
    assert note.endswith("... (+1 more failures left out)")


def test_control_characters_are_escaped_never_raw() -> None:
    note = fit_note(['[FAIL] HIGH - value "a\nb\\c" (MT3001)'], [])
    assert "\n" not in note and "\\x0a" in note
