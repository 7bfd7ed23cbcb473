# SPDX-License-Identifier: Apache-2.0
"""python/ installs as a package, offline: pip builds it with the system's setuptools into a
target folder, and a fresh interpreter imports loki_client from there, at the project's version.

usage: test_package.py SOURCE_DIR VERSION   (exit 77, skipped, without pip or setuptools)
"""
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    src, version = sys.argv[1], sys.argv[2]
    for mod in ("setuptools", "pip"):
        if subprocess.run([sys.executable, "-c", "import " + mod],
                          capture_output=True).returncode != 0:
            print("%s: no %s (./build.sh installs python3-pip): skipped" % (sys.executable, mod))
            sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="loki-pkg-") as d:
        # a copy: an in-tree build would leave build/ and *.egg-info in python/
        pkg = os.path.join(d, "src")
        shutil.copytree(os.path.join(src, "python"), pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        target = os.path.join(d, "target")
        env = dict(os.environ, TMPDIR=d, PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                            "--no-deps", "--no-index", "--no-cache-dir", "--target", target, pkg],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("pip install failed:\n%s%s" % (r.stdout, r.stderr))
        # a fresh interpreter, outside the source tree, sees only the target folder
        probe = ("import importlib.metadata as m, loki_client\n"
                 "print(loki_client.__file__)\n"
                 "print(m.version('loki-client'))\n"
                 "print(m.requires('loki-client'))\n"
                 "print(loki_client.PayloadTooLarge.__name__)\n")
        env = dict(os.environ, PYTHONPATH=target, PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-c", probe], cwd=d, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("import failed:\n%s" % r.stderr)
        where, got, requires, _ = r.stdout.splitlines()
        assert os.path.dirname(where) == target, where
        assert filecmp.cmp(where, os.path.join(src, "python", "loki_client.py"), shallow=False)
        assert got == version, "package version %s, project version %s" % (got, version)
        assert "msgpack" in requires, requires
    print("package: installed offline and imported, version %s" % version)


if __name__ == "__main__":
    main()
