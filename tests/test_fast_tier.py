"""The fast tier (`pytest -m "not slow"`) holds the unit tests of the checker, the report, the tiers
and the regions, and none of the tests that need the photo packages, the SSCD model or a browser."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_the_fast_tier_holds_the_unit_tests_and_leaves_out_the_slow_ones():
    files = ["tests/test_checker.py", "tests/test_thresholds.py", "tests/test_report.py", "tests/test_regions.py",
             "tests/test_detection_sscd.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-m", "not slow", *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    fast = {line.split("[")[0] for line in r.stdout.splitlines() if "::" in line}
    for name in ("test_checker.py::test_edited_copies_are_found_and_new_drawings_are_not",
                 "test_thresholds.py::test_bad_overrides_are_refused_naming_the_override",
                 "test_report.py::test_the_summary_names_the_verdict_the_score_and_the_pack",
                 "test_regions.py::test_box_layout_of_a_square_map",
                 "test_regions.py::test_the_regions_option_has_one_rule_wherever_it_is_read"):
        assert f"tests/{name}" in fast, name
    # every test of SSCD detection needs the model (sscd_onnx) or the photos (pack_photos); so do
    # the region tests on real photos, directly or through another fixture
    sscd_tests = (REPO / "tests" / "test_detection_sscd.py").read_text().count("\ndef test_")
    deselected = int(re.search(r"\((\d+) deselected\)", r.stdout).group(1))
    assert sscd_tests >= 4 and deselected >= sscd_tests + 10
    assert not any(t.startswith("tests/test_detection_sscd.py") for t in fast)
    assert "tests/test_regions.py::test_pasted_copy_missed_whole_is_found_with_its_box" not in fast
    assert "tests/test_regions.py::test_background_is_refused_for_bit_codes" not in fast  # via pack_photos


def test_every_test_run_here_that_needs_a_slow_fixture_is_marked_slow(request):
    """In the full run this checks every test; in the fast tier, that none of them was selected."""
    from conftest import SLOW_FIXTURES

    for item in request.session.items:
        if set(getattr(item, "fixturenames", ())) & SLOW_FIXTURES:
            assert item.get_closest_marker("slow") is not None, item.nodeid
