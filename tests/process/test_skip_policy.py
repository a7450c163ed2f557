"""The skip policy of tests/conftest.py: under RAFTLOG_REQUIRE_ALL_TESTS=1 a skip whose reason is
not in EXPECTED_SKIPS fails (test-level, marker and module-level skips alike), an expected one
stays a skip; without the variable every skip stays a skip.

Each case runs pytest in a subprocess on a scratch directory holding a copy of the conftest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import PURE_NO_DIFFERENTIAL

pytestmark = pytest.mark.process

TESTS = Path(__file__).resolve().parents[1]

CASES = f'''
import pytest

def test_passes():
    pass

def test_skips_for_a_missing_tool():
    pytest.skip("the nft command is not installed")

@pytest.mark.skip(reason="not today")
def test_skip_marker():
    pass

@pytest.mark.skipif(True, reason="some condition")
def test_skipif_marker():
    pass

def test_expected_skip():
    pytest.skip({PURE_NO_DIFFERENTIAL!r})
'''

MODULE_SKIP = '''
import pytest

pytest.skip("cannot mount a tmpfs", allow_module_level=True)

def test_never_collected():
    pass
'''


def outcomes(tmp_path: Path, require_all: str) -> dict[str, str]:
    """Run pytest on CASES and MODULE_SKIP with RAFTLOG_REQUIRE_ALL_TESTS=`require_all`: test -> outcome.

    "exit code" maps to pytest's exit status. Plugin autoloading is off: only the conftest's
    hooks matter here, and pytest starts in a fraction of the time.
    """
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    xml = tmp_path / "report.xml"
    env = {**os.environ, "RAFTLOG_REQUIRE_ALL_TESTS": require_all, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                           "--continue-on-collection-errors", "test_cases.py", "test_module_skip.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    found = {"exit code": str(done.returncode)}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return found


def test_unexpected_skips_fail_under_require_all_tests(tmp_path: Path) -> None:
    got = outcomes(tmp_path, "1")
    assert got == {
        "test_cases::test_passes": "passed",
        "test_cases::test_skips_for_a_missing_tool": "failure",
        "test_cases::test_skip_marker": "error",      # a marker skips in setup: the failure is a setup error
        "test_cases::test_skipif_marker": "error",
        "test_cases::test_expected_skip": "skipped",
        "::test_module_skip": "error",
        "exit code": "1",
    }, got


def test_without_the_variable_skips_stay_skips(tmp_path: Path) -> None:
    got = outcomes(tmp_path, "")
    assert got == {
        "test_cases::test_passes": "passed",
        "test_cases::test_skips_for_a_missing_tool": "skipped",
        "test_cases::test_skip_marker": "skipped",
        "test_cases::test_skipif_marker": "skipped",
        "test_cases::test_expected_skip": "skipped",
        "::test_module_skip": "skipped",
        "exit code": "0",
    }, got
