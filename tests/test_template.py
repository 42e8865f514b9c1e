"""The copier template: generated projects install and pass their own checks, `copier update` keeps
the user's edits, invalid answers write nothing, and the template cannot drift from this repository."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from copier import run_copy, run_update

from components import cli
from components.core.profiles import available_profiles
from tests.conftest import ROOT, use_project

TEMPLATE = ROOT / "template"
COPIER_YML = yaml.safe_load((ROOT / "copier.yml").read_text())
GIT_ID = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
          "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org"}
# Files rendered from a .jinja source or owned by the template (tests/), not taken from the repository.
TEMPLATE_OWNED = {"pyproject.toml", "pixi.toml", "README.md", ".python-version", ".copier-answers.yml",
                  ".github/workflows/ci.yml", "tests/test_project.py"}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ID}).stdout


def _template_repo(dest: Path, tag: str = "v1") -> Path:
    """This working tree (tracked and new files, symlinks kept) as a git repository with one tag."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = ROOT / rel, dest / rel
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    _git(dest, "init", "--quiet", "--initial-branch=main")
    _git(dest, "add", "--all")
    _git(dest, "commit", "--quiet", "--message", "template")
    _git(dest, "tag", tag)
    return dest


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    return _template_repo(tmp_path_factory.mktemp("template"))


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch):
    for name, value in GIT_ID.items():
        monkeypatch.setenv(name, value)


def _copy(src: Path, dst: Path, ref: str = "HEAD", **answers) -> Path:
    run_copy(str(src), str(dst), data=answers, defaults=True, unsafe=True, vcs_ref=ref, quiet=True)
    return dst


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts}


# --- one source of truth -------------------------------------------------------------------------

def test_template_is_links_into_the_repository_plus_rendered_files():
    for path in TEMPLATE.rglob("*"):
        rel = path.relative_to(TEMPLATE)
        if path.is_symlink():
            target = path.resolve()
            assert target.exists(), f"template/{rel} is a broken link"
            assert ROOT in target.parents and TEMPLATE not in target.parents, f"template/{rel} must link into the repository"
        elif path.is_file():
            assert path.suffix == ".jinja" or rel.parts[0] == "tests", (
                f"template/{rel} is a copy: link to the repository's file instead, or render it from a .jinja source")


def test_generated_project_carries_the_repository_files(template_repo, tmp_path):
    project = _copy(template_repo, tmp_path / "p", project_name="p")
    tracked = set(filter(None, subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()))
    shipped = _files(project)
    for rel in sorted(shipped - TEMPLATE_OWNED):
        source = ROOT / rel
        assert source.is_file(), f"{rel} in the generated project has no source in the repository"
        assert source.read_bytes() == (project / rel).read_bytes(), f"{rel} differs from the repository's"
    for folder in ("components", "clusters", "scripts", "constraints"):
        missing = {f for f in tracked if f.startswith(folder + "/")} - shipped
        assert not missing, f"not shipped: {sorted(missing)}"


def test_default_answers_reproduce_this_repositorys_configuration(template_repo, tmp_path):
    project = _copy(template_repo, tmp_path / "p", project_name="dagster-hpc-components")
    for name in ("pyproject.toml", "pixi.toml"):
        assert (project / name).read_text() == (ROOT / name).read_text(), (
            f"{name} and template/{name}.jinja disagree: change both together")


def test_project_name_is_the_code_location_name(template_repo, tmp_path):
    from dagster_dg_core.context import DgContext

    project = _copy(template_repo, tmp_path / "folder_name", project_name="lab-pipeline")
    assert DgContext.for_project_environment(project, {}).code_location_name == "lab-pipeline"


@pytest.mark.parametrize("readme", ["README.md", "template/README.md.jinja", "clusters/README.md"])
def test_readme_commands_run_as_written_on_a_fresh_machine(readme):
    # make puts .venv/bin on PATH for its own recipes, a user's shell does not: `dg ...` alone is "command not found".
    text = (ROOT / readme).read_text()
    bare = [m.group(0) for m in re.finditer(r"(?<!runs )`(dg|hpc) [^`]*`", text)]
    assert not bare, f"{readme}: write .venv/bin/dg or .venv/bin/hpc: {bare}"


def test_dg_help_lists_its_commands():
    # The locked typer renders dg's help; typer 0.26+ printed the options and no command at all.
    from tests.conftest import VENV_BIN

    result = subprocess.run([str(VENV_BIN / "dg"), "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {"check", "dev", "launch", "list", "scaffold"} <= listed, result.stdout


def test_cluster_choices_are_the_shipped_profiles():
    assert sorted(COPIER_YML["default_cluster"]["choices"].values()) == available_profiles(ROOT / "clusters")


# --- answers -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("answers", "message"), [
    ({"project_name": "My Project"}, "project_name \"My Project\" is not valid"),
    ({"project_name": "a--b"}, "single hyphens"),
    ({"user_env": "lab-user"}, "not a valid variable name"),
    ({"account_env": "HPC_USER"}, "need their own variables"),
    ({"user_env": "HPC_CLUSTER"}, "selects the cluster"),
    ({"default_cluster": "vsc6"}, "'vsc6' is not in"),
    ({"examples": ["slurm", "k8s"]}, "'k8s' is not in"),
    ({"python_version": "3.10"}, "'3.10' is not in"),
])
def test_invalid_answers_are_refused_and_nothing_is_written(template_repo, tmp_path, answers, message):
    target = tmp_path / "p"
    with pytest.raises(ValueError, match=re.escape(message)):
        _copy(template_repo, target, **{"project_name": "p", **answers})
    assert not target.exists() or not any(target.iterdir())


def test_invalid_data_on_the_command_line_exits_1_with_the_reason_last(template_repo, tmp_path):
    # What the README promises for `copier copy --data ...`: copier's traceback, our reason as its last line.
    from tests.conftest import VENV_BIN

    target = tmp_path / "p"
    done = subprocess.run([str(VENV_BIN / "copier"), "copy", "--trust", "--defaults", "--vcs-ref", "HEAD",
                           "--data", "project_name=My Project", str(template_repo), str(target)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "ValueError: Validation error for question 'project_name': project_name \"My Project\" is not valid"), done.stderr
    assert not target.exists()


def test_examples_select_defs_workloads_and_the_lock(template_repo, tmp_path):
    project = _copy(template_repo, tmp_path / "p", project_name="p", examples=["metaxy"])
    assert sorted(p.name for p in (project / "defs").iterdir() if p.is_dir()) == ["media"]
    assert not (project / "branches.yaml").exists()  # its branch sets documents/markdown, which this project lacks
    assert not (project / "workloads" / "draw_numbers.py").exists() and (project / "workloads" / "list_media.py").exists()
    assert (project / "requirements.lock").read_text() == (ROOT / "requirements-core.lock").read_text()
    assert "docling" not in (project / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("[project.scripts]")[0]


def test_copy_makes_a_git_repository_with_one_commit(template_repo, tmp_path):
    project = _copy(template_repo, tmp_path / "p", project_name="p", examples=[])
    assert _git(project, "log", "--format=%s").splitlines() == ["Scaffold from the dagster-hpc-components template"]
    assert _git(project, "status", "--porcelain") == ""


def test_readme_examples_work(template_repo, tmp_path, monkeypatch, capsys):
    """The generated README's new asset and new cluster profile, as a user would paste them."""
    project = _copy(template_repo, tmp_path / "p", project_name="p", examples=["slurm"])
    readme = (project / "README.md").read_text()
    blocks = dict(re.findall(r"```yaml\n# (\S+)\n(.*?)```", readme, flags=re.S))
    (project / "clusters" / "mysite.yaml").write_text(blocks["clusters/mysite.yaml"])
    (project / "defs" / "my_asset").mkdir()
    (project / "defs" / "my_asset" / "defs.yaml").write_text(blocks["defs/my_asset/defs.yaml"])
    (project / "workloads" / "my_asset.py").write_text("print('hello')\n")
    use_project(project, monkeypatch)
    assert cli.main(["clusters"]) == 0, capsys.readouterr().err
    assert "mysite" in capsys.readouterr().out
    assert cli.main(["render", "defs/my_asset", "--cluster", "mysite"]) == 0, capsys.readouterr().err
    script = capsys.readouterr().out
    assert "#SBATCH --partition=compute" in script and "#SBATCH --cpus-per-task=4" in script


def test_copy_ends_with_the_next_two_commands(template_repo, tmp_path, capsys):
    run_copy(str(template_repo), str(tmp_path / "p"), data={"project_name": "p", "examples": []}, defaults=True,
             unsafe=True, vcs_ref="HEAD")
    err = capsys.readouterr().err
    assert f"cd {tmp_path / 'p'} && make test" in err and "make dev" in err, err


# --- copier update -------------------------------------------------------------------------------

def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_update_merges_template_changes_and_keeps_user_edits(template_repo, tmp_path):
    src = _template_repo(tmp_path / "template")
    project = _copy(src, tmp_path / "p", ref="v1", project_name="p", examples=["slurm"], default_cluster="vsc5")

    # The user's edits: a changed and a new asset, a changed and a new cluster profile, an override.
    _edit(project / "defs/numbers/defs.yaml", '"--count", "5000"', '"--count", "7"')
    (project / "defs/mine").mkdir()
    (project / "defs/mine/defs.yaml").write_text("type: components.SlurmAssetComponent\nattributes: {assets: [{key: mine}], script: mine.py}\n")
    _edit(project / "clusters/vsc5.yaml", "keepalive_s: 120", "keepalive_s: 30")
    shutil.copy(project / "clusters/musica.yaml", project / "clusters/mylab.yaml")
    (project / "clusters/overrides/leonardo.yaml").write_text("paths: {base_dir: $WORK/me}\n")
    _git(project, "add", "--all")
    _git(project, "commit", "--quiet", "--message", "my edits")

    # The template's next version touches the same files, on other lines, and adds a profile.
    _edit(src / "defs/numbers/defs.yaml", "description: Random numbers drawn", "description: Random integers drawn")
    _edit(src / "clusters/vsc5.yaml", 'max_time: "3-00:00:00"', 'max_time: "2-00:00:00"')
    shutil.copy(src / "clusters/musica.yaml", src / "clusters/newsite.yaml")
    _edit(src / "template/README.md.jinja", "## Template updates", "## Template updates (v2)")
    _git(src, "add", "--all")
    _git(src, "commit", "--quiet", "--message", "v2")
    _git(src, "tag", "v2")

    run_update(str(project), vcs_ref="v2", defaults=True, overwrite=True, unsafe=True, quiet=True)

    numbers = (project / "defs/numbers/defs.yaml").read_text()
    assert '"--count", "7"' in numbers and "Random integers drawn" in numbers
    vsc5 = (project / "clusters/vsc5.yaml").read_text()
    assert "keepalive_s: 30" in vsc5 and 'max_time: "2-00:00:00"' in vsc5
    assert (project / "defs/mine/defs.yaml").is_file() and (project / "clusters/mylab.yaml").is_file()
    assert (project / "clusters/overrides/leonardo.yaml").read_text() == "paths: {base_dir: $WORK/me}\n"
    assert (project / "clusters/newsite.yaml").is_file()
    assert "## Template updates (v2)" in (project / "README.md").read_text()
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v2"
    assert 'cluster = "vsc5"' in (project / "pyproject.toml").read_text()
    for rel in _files(project):
        assert not rel.endswith(".rej"), rel
        assert "<<<<<<<" not in (project / rel).read_text(errors="replace"), f"conflict in {rel}"
    # The one-time task did not run again: the user's history is intact, the update is left to review.
    assert _git(project, "log", "--format=%s").splitlines()[0] == "my edits"
    assert "defs/numbers/defs.yaml" in _git(project, "status", "--porcelain")


def test_update_names_the_files_left_with_conflicts(tmp_path, capfd):
    src = _template_repo(tmp_path / "template")
    project = _copy(src, tmp_path / "p", ref="v1", project_name="p", examples=["slurm"])
    _edit(project / "clusters/vsc5.yaml", "keepalive_s: 120", "keepalive_s: 30")
    _git(project, "commit", "--quiet", "--all", "--message", "my edit")
    _edit(src / "clusters/vsc5.yaml", "keepalive_s: 120", "keepalive_s: 60")
    _git(src, "commit", "--quiet", "--all", "--message", "v2")
    _git(src, "tag", "v2")
    capfd.readouterr()

    run_update(str(project), vcs_ref="v2", defaults=True, overwrite=True, unsafe=True)

    assert "<<<<<<< before updating" in (project / "clusters/vsc5.yaml").read_text()
    out = capfd.readouterr()
    assert "conflicts to resolve" in out.out and "  clusters/vsc5.yaml" in out.out, out
    assert "--diff-filter=U" in out.err, out.err


# --- generated projects, installed ---------------------------------------------------------------

def _python_runs(project: Path, version: str) -> bool:
    return subprocess.run([f"python{version}", "-c", "pass"], cwd=project, capture_output=True).returncode == 0


def _make(project: Path, *targets: str, timeout: int = 900) -> subprocess.CompletedProcess:
    # As on a fresh shell: nothing of this repository's virtualenv, the project bootstraps its own.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "DAGSTER_HOME")}
    return subprocess.run(["make", *targets], cwd=project, env={**env, "PATH": path}, capture_output=True,
                          text=True, timeout=timeout)


ANSWER_SETS = {
    "defaults": {"project_name": "demo"},
    "slurm-vsc5-py312": {"project_name": "lab-pipeline", "examples": ["slurm"], "default_cluster": "vsc5",
                         "python_version": "3.12", "user_env": "LAB_USER", "account_env": "LAB_ACCOUNT"},
    "empty-leonardo": {"project_name": "bare", "examples": [], "default_cluster": "leonardo"},
}


@pytest.mark.integration
@pytest.mark.parametrize("answers", ANSWER_SETS.values(), ids=ANSWER_SETS.keys())
def test_generated_project_installs_and_passes_its_checks(template_repo, tmp_path, answers):
    project = _copy(template_repo, tmp_path / answers["project_name"], **answers)
    version = answers.get("python_version", "3.11")
    if not _python_runs(project, version):
        pytest.skip(f"Python {version} is not installed here")
    done = _make(project, "test", "check")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-2000:]
    assert "All definitions loaded successfully." in done.stdout + done.stderr
    python = (project / ".venv/bin/python")
    assert subprocess.run([str(python), "-c", f"import sys; assert sys.version_info[:2] == {tuple(map(int, version.split('.')))}"]).returncode == 0
    if answers.get("default_cluster") == "vsc5":
        env = {**os.environ, "LAB_ACCOUNT": "p71234"}
        env.pop("VSC5_ACCOUNT", None)
        preview = subprocess.run([str(project / ".venv/bin/hpc"), "render", "defs/numbers", "--strict"], cwd=project,
                                 env=env, capture_output=True, text=True)
        assert preview.returncode == 0, preview.stderr
        assert "--account=p71234 <- $LAB_ACCOUNT (pyproject.toml tool.hpc.account_env)" in preview.stdout
        assert "#SBATCH --partition=zen3_0512" in preview.stdout
    if answers["project_name"] == "demo":
        _ui_comes_up(project)


def _ui_comes_up(project: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["DAGSTER_HOME"] = str(project / ".dagster")
    server = subprocess.Popen([str(project / ".venv/bin/dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                query = b'{"query": "{ assetNodes { assetKey { path } } }"}'
                request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query,
                                                 headers={"Content-Type": "application/json"})
                body = urllib.request.urlopen(request, timeout=5).read().decode()
                if "documents" in body and "numbers" in body:
                    return
            except OSError:
                pass
            time.sleep(1)
        pytest.fail("dg dev did not serve the project's assets within 120 s")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
