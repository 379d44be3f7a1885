"""pytest set-up shared by every test file.

Temporary files go under pytest's own temporary directory, which pytest
rotates (it keeps the last three runs' directories), instead of piling up in
/tmp: `tempfile.mkdtemp()` of the tests, `self.get_temp_dir()` of
`tf.test.TestCase`, and the subprocesses the tests start (through TMPDIR).
"""

import os
import tempfile

import pytest


@pytest.fixture(scope='session', autouse=True)
def _temporary_files_under_pytest(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tmp'))
  saved = tempfile.tempdir, os.environ.get('TMPDIR')
  tempfile.tempdir = root
  os.environ['TMPDIR'] = root
  yield
  tempfile.tempdir = saved[0]
  if saved[1] is None:
    os.environ.pop('TMPDIR', None)
  else:
    os.environ['TMPDIR'] = saved[1]
