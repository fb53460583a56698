"""The README's commands as written.

* The README's command sequence (section "Command line"), chained on tiny data
  with every output in a different folder and run from yet another folder:
  each command reads the previous one's outputs where they were written, so
  every metadata file written must have image references that resolve from
  its own folder. Outputs get the user's umask (0644 with umask 022). The test
  reads the README's block of ``deephemnma ...`` lines and checks that it runs
  the same commands in the same order, with every option the README uses
  (sizes shrunk: 40 noisy 32 px particles, 1 epoch).
* Every ``deephemnma <command>`` the README or docs/BENCHMARKS.md shows is a
  command of the parser, with options that command has; the README's command
  table lists exactly the parser's commands; the demo's and the benchmarks'
  options exist in their scripts; every ``make`` target exists.
* Every file the README and docs/*.md cite (links, repository paths, test
  modules, templates with their field aliases, images) exists.
"""
import glob
import os
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_file

PS = "2.6"
DOCS = ["README.md", "docs/BENCHMARKS.md"]


def code_lines(text):
    """The code a markdown text shows: the lines of each fenced block (one
    list per block) and each inline code span (a list of one line), with shell
    comments removed and continued lines joined."""
    blocks, lines, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fenced:
                blocks.append(lines)
                lines = []
            fenced = not fenced
        elif fenced:
            lines.append(line)
    out = []
    for b in blocks:
        joined, cont = [], ""
        for line in b:
            line = re.sub(r"\s+#.*$", "", line).rstrip()
            if line.endswith("\\"):
                cont += line[:-1] + " "
                continue
            joined.append((cont + line).strip())
            cont = ""
        out.append(joined)
    unfenced = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [[span.strip()] for span in re.findall(r"`([^`\n]+)`", unfenced)]
    return out


def readme_commands():
    """[(command, [option names])] of the README's chain: its code block of
    ``deephemnma`` lines that starts with ``deephemnma nma``."""
    for block in code_lines((ROOT / "README.md").read_text()):
        cmds = [line for line in block if line.startswith("deephemnma ")]
        if len(block) > 1 and cmds and cmds[0].startswith("deephemnma nma "):
            return [(m.group(1), re.findall(r"(?<!\S)(--[a-z][a-z-]*)", m.group(2)))
                    for m in (re.match(r"deephemnma (\S+)(.*)$", c) for c in cmds)]
    return []


def run(argv, cwd):
    """``python -m deephemnma <argv>`` from ``cwd`` with umask 022."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", DEEPHEMNMA_QUIET="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "deephemnma"] + [str(a) for a in argv],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, (f"deephemnma {' '.join(map(str, argv))} (in {cwd}) -> exit "
                               f"{r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def unresolved_references(xmd):
    """Image references of ``xmd`` whose stack does not exist relative to the
    file's own folder (or absolute)."""
    from deephemnma.io.metadata import parse_image_ref, read_metadata
    t = read_metadata(xmd)
    if "image" not in t:
        return []
    bad = []
    for ref in dict.fromkeys(str(r) for r in t["image"]):
        _, p = parse_image_ref(ref)
        full = p if os.path.isabs(p) else os.path.join(os.path.dirname(xmd), p)
        if not os.path.isfile(full):
            bad.append(ref)
    return bad


def test_readme_chain_in_separate_folders(tmp_path):
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.io.stacks import read_volume
    ak = shared_file("continuousflex", "AK.pdb")
    (tmp_path / "inputs").mkdir()
    shutil.copy(ak, tmp_path / "inputs" / "AK.pdb")
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    up = "../../"          # from cwd to tmp_path

    steps = []             # (command, argv) in the order run

    def go(*argv):
        steps.append((argv[0], [a for a in argv if str(a).startswith("--")]))
        return run(argv, cwd)

    go("nma", "--structure", up + "inputs/AK.pdb", "--out", up + "nma_out/ref", "--modes", 12)
    go("simulate", "--structure", up + "inputs/AK.pdb", "--modes", up + "nma_out/ref",
       "--out", up + "sim_out/data", "-n", 40, "--box", 32, "--pixel-size", PS, "--seed", 1,
       "--snr", 1.0)
    # the user's two subsets (set1.xmd, set2.xmd), written in a folder of their own
    t = read_metadata(tmp_path / "sim_out" / "data" / "particles.xmd")
    (tmp_path / "subsets").mkdir()
    write_xmd(tmp_path / "subsets" / "set1.xmd", t.subset(np.arange(24)))
    write_xmd(tmp_path / "subsets" / "set2.xmd", t.subset(np.arange(24, 40)))
    assert not unresolved_references(str(tmp_path / "subsets" / "set1.xmd"))

    go("align", "--particles", up + "subsets/set1.xmd", "--modes", up + "nma_out/ref",
       "--structure", up + "nma_out/ref/reference.pdb", "--pixel-size", PS,
       "--out", up + "hemnma_out/hemnma.xmd", "--outlier-threshold", 3.2,
       "--angular-step", 30, "--coarse-iters", 3, "--fine-iters", 2, "--chunk", 8)
    kept = tmp_path / "hemnma_out" / "hemnma_kept.xmd"
    assert kept.exists()
    go("train", "--particles", up + "hemnma_out/hemnma_kept.xmd", "--out",
       up + "train_out/model", "--mode-list", "7-9", "--epochs", 1, "--input-size", 32,
       "--batch-size", 8)
    go("predict", "--model", up + "train_out/model/model.pt", "--particles",
       up + "subsets/set2.xmd", "--out", up + "pred_out/predicted.xmd")
    go("refine", "--particles", up + "pred_out/predicted.xmd", "--modes", up + "nma_out/ref",
       "--structure", up + "nma_out/ref/reference.pdb", "--pixel-size", PS,
       "--out", up + "refine_out/refined.xmd", "--refine-coarse-iters", 2,
       "--refine-fine-iters", 2)
    assert not unresolved_references(str(tmp_path / "refine_out" / "refined.xmd"))
    go("landscape", "--particles", up + "pred_out/predicted.xmd", "--also",
       up + "hemnma_out/hemnma_kept.xmd", "--out", up + "land_out/land", "--split", "1:12",
       "--min-group", 5, "--structure", up + "nma_out/ref/reference.pdb",
       "--modes", up + "nma_out/ref")
    land = tmp_path / "land_out" / "land"
    assert (land / "group_01.xmd").exists() and (land / "centroid_01.pdb").exists()
    go("reconstruct", "--particles", up + "land_out/land/group_01.xmd", "--pixel-size", PS,
       "--out", up + "maps_out/group_01.mrc", "--min-images", 5)
    go("model-map", "--structure", up + "land_out/land/centroid_01.pdb", "--box", 32,
       "--pixel-size", PS, "--out", up + "cm_out/centroid_01.mrc")
    out = go("fsc", up + "maps_out/group_01.mrc", up + "cm_out/centroid_01.mrc",
             "--png", up + "fsc_out/fsc_01.png")

    # the chain is the README's: same commands, same order, every README option
    readme = readme_commands()
    assert [c for c, _ in readme] == [c for c, _ in steps], \
        f"README sequence {[c for c, _ in readme]} != tested {[c for c, _ in steps]}"
    for (cmd, opts), (_, used) in zip(readme, steps):
        assert set(opts) <= set(used), f"{cmd}: README options {sorted(set(opts) - set(used))}" \
                                       " not exercised"

    # results are usable
    vol, vs = read_volume(tmp_path / "maps_out" / "group_01.mrc")
    assert vol.shape == (32, 32, 32) and np.isfinite(vol).all() and np.abs(vol).max() > 0
    assert vs == pytest.approx(float(PS), rel=1e-3)
    assert (tmp_path / "fsc_out" / "fsc_01.png").stat().st_size > 0
    assert "FSC" in out
    pred = read_metadata(tmp_path / "pred_out" / "predicted.xmd")
    assert len(pred) == 16 and np.isfinite(pred["nmaDisplacements"]).all()

    # every metadata file written resolves its images from its own folder, and
    # nothing is left in the working folder; files have the umask's mode
    xmds = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns
            if n.endswith((".xmd", ".star"))]
    assert len(xmds) >= 8
    for x in xmds:
        assert not unresolved_references(x), f"{x}: unresolved {unresolved_references(x)[:3]}"
    assert not os.listdir(cwd), f"files written in the working folder: {os.listdir(cwd)}"
    made = [os.path.join(d, n) for d, _, ns in os.walk(tmp_path) for n in ns]
    stray = [m for m in made if m.endswith((".part", ".tmp")) or ".parts" in m
             or os.path.basename(m).startswith(".")]
    assert not stray, f"temporary files left: {stray}"
    wrong = [f"{m} {oct(stat.S_IMODE(os.stat(m).st_mode))}" for m in made
             if "inputs" not in m and "subsets" not in m
             and stat.S_IMODE(os.stat(m).st_mode) != 0o644]
    assert not wrong, f"outputs not created with the umask (0644): {wrong}"


# --------------------------------------------------------------------------
# commands, options and files cited by the README and docs/BENCHMARKS.md

OPTION = r"(?<![\w/=.-])(--?[A-Za-z][\w-]*)"
IMAGE = r"!\[[^\]]*\]\(([^)\s]+)\)"


def parser_options():
    """{command: set of option strings} of ``deephemnma``'s parser."""
    from deephemnma.cli import build_parser
    sub = [a for a in build_parser()._actions
           if a.__class__.__name__ == "_SubParsersAction"][0]
    return {name: {o for a in p._actions for o in a.option_strings}
            for name, p in sub.choices.items()}


def script_options(path):
    """Option strings a script declares with argparse (read from its source)."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    opts = {"-h", "--help"}
    for call in re.findall(r"add_argument\(([^)]*)", src):
        opts |= set(re.findall(r"[\"'](-{1,2}[A-Za-z][\w-]*)[\"']", call))
    return opts


def command_problems(text, commands=None, demo=None):
    """What the code of ``text`` shows that does not exist: ``deephemnma
    <command>`` lines (command and options), ``python -m deephemnma.demo``
    options, ``python benchmarks/X.py`` scripts and their options, and spans
    such as `predict --rescale` or a bare `--rescale`."""
    commands = parser_options() if commands is None else commands
    demo = script_options(ROOT / "deephemnma" / "demo.py") if demo is None else demo
    every = set().union(*commands.values(), demo,
                        *(script_options(f) for f in glob.glob(str(ROOT / "benchmarks" / "*.py"))))
    problems = []
    for block in code_lines(text):
        for line in block:
            for m in re.finditer(r"(?<![\w.-])deephemnma ([a-z][a-z-]*)(.*)$", line):
                cmd, rest = m.group(1), re.split(r"[|;&]", m.group(2))[0]
                if cmd not in commands:
                    problems.append(f"`{line}`: no command {cmd!r}")
                    continue
                problems += [f"`{line}`: {cmd} has no option {o}"
                             for o in re.findall(OPTION, rest) if o not in commands[cmd]]
            if "deephemnma.demo" in line:
                problems += [f"`{line}`: the demo has no option {o}"
                             for o in re.findall(OPTION, line.split("deephemnma.demo", 1)[1])
                             if o not in demo]
            for m in re.finditer(r"(benchmarks/[\w.-]+\.py)(.*)$", line):
                script = ROOT / m.group(1)
                if not script.is_file():
                    problems.append(f"`{line}`: {m.group(1)} does not exist")
                elif re.search(r"python\S* (\S+ )*" + re.escape(m.group(1)), line):
                    known = script_options(script)
                    rest = re.split(r"[|;&]", m.group(2))[0]
                    problems += [f"`{line}`: {m.group(1)} has no option {o}"
                                 for o in re.findall(OPTION, rest) if o not in known]
            words = line.split()
            if len(words) > 1 and words[0] in commands and words[1].startswith("-"):
                problems += [f"`{line}`: {words[0]} has no option {o}"
                             for o in re.findall(OPTION, line) if o not in commands[words[0]]]
            elif words and words[0].startswith("--") and words[0] not in every:
                problems.append(f"`{line}`: no command or demo option {words[0]}")
    return problems


def path_problems(text, root=ROOT):
    """What ``text`` cites that does not exist under ``root``: link targets,
    repository paths (globs must match), ``scipion3 tests`` modules, ``make``
    targets, template names and their field aliases. Images: image_problems."""
    problems = []
    cited = set(re.findall(r"\]\(([^)#\s]+)\)", text)) - set(re.findall(IMAGE, text))
    cited |= set(re.findall(
        r"(?<![\w/.-])((?:benchmarks|deephemnma|tests|tools|docs)/[\w./*-]*[\w*])(?![\w./*<-])",
        text))
    cited |= set(re.findall(r"(?<![\w/.-])(LICENSE|CHANGES\.md|Makefile|setup\.py|"
                            r"protocols\.conf|requirements\.txt)(?![\w.])", text))
    for c in sorted(cited):
        if re.match(r"[a-z]+:", c) or "<" in c or c.startswith("docs/images/"):
            continue
        if not glob.glob(str(root / c)):
            problems.append(f"{c} does not exist")
    for mod in sorted(set(re.findall(r"scipion3 tests (deephemnma(?:\.\w+)+)", text))):
        parts = mod.split(".")
        if not any(root.joinpath(*parts[:k]).with_suffix(".py").is_file()
                   for k in range(2, len(parts) + 1)):
            problems.append(f"test module {mod} does not exist")
    targets = set(re.findall(r"^([\w-]+):", (root / "Makefile").read_text(), re.M))
    made = {line.split()[1] for block in code_lines(text) for line in block
            if line.startswith("make ") and len(line.split()) > 1}
    problems += [f"make {t}: no such target" for t in sorted(made) if t not in targets]
    for block in code_lines(text):
        for line in block:
            m = re.search(r"scipion3 template deephemnma-(\w+)(.*)$", line)
            if not m:
                continue
            tpl = root / "deephemnma" / "templates" / f"{m.group(1)}.json.template"
            if not tpl.is_file():
                problems.append(f"template {m.group(1)} does not exist")
                continue
            aliases = set(re.findall(r"~[^~|]*\|[^~|]*\|[^~|]*\|(\w+)~", tpl.read_text()))
            problems += [f"template {m.group(1)} has no field {a}"
                         for a in re.findall(r"(?<!\S)(\w+)=", m.group(2))
                         if a not in aliases | {"project_name"}]
    return problems


def image_problems(text, root=ROOT):
    """Images ``text`` shows that do not exist."""
    return [f"{p} does not exist" for p in re.findall(IMAGE, text) if not (root / p).is_file()]


def test_readme_and_benchmarks_commands_exist():
    commands = parser_options()
    text = (ROOT / "README.md").read_text()
    table = re.search(r"^\| command \|.*\n\|[-|]+\n((?:\|.*\n)+)", text, re.M)
    assert table, "README: no command table"
    listed = {c for cell in re.findall(r"^\| ([^|]+) \|", table.group(1), re.M)
              for c in re.findall(r"`([a-z-]+)`", cell)}
    assert listed == set(commands), \
        f"README command table {sorted(listed)} != the parser's {sorted(commands)}"
    assert len(readme_commands()) >= 10, "README: no chain of deephemnma commands"
    problems = [f"{doc}: {p}" for doc in DOCS
                for p in command_problems((ROOT / doc).read_text(), commands)]
    assert not problems, "\n".join(problems)


def test_cited_files_exist():
    docs = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                  for p in glob.glob(str(ROOT / "docs" / "*.md")))
    problems = [f"{doc}: {p}" for doc in docs for p in path_problems((ROOT / doc).read_text())]
    assert not problems, "\n".join(problems)


def test_readme_images_exist():
    text = (ROOT / "README.md").read_text()
    assert re.findall(IMAGE, text), "README shows no screenshot"
    problems = image_problems(text)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_is_missing():
    """The checkers report a missing script, file, command, option, test
    module, make target, template field and image, and pass existing ones."""
    text = "\n".join([
        "See `benchmarks/bench_nothing.py` and [the guide](docs/NOTHING.md).",
        "```bash",
        "deephemnma nma --structure AK.pdb --no-such-option 3",
        "deephemnma no-such-command --out x",
        "python benchmarks/bench_align.py --no-such-flag",
        "python -m deephemnma.demo --no-such-demo-option",
        "scipion3 tests deephemnma.tests.test_nothing",
        "scipion3 template deephemnma-synthetic_workflow --nogui no_such_field=1 box=64",
        "make no-such-target",
        "```",
        "`predict --no-such-predict-option`, `--no-such-bare-option`",
        "![x](docs/images/nothing.png)",
    ])
    cp, pp = command_problems(text), path_problems(text)
    for what in ["--no-such-option", "'no-such-command'", "--no-such-flag",
                 "--no-such-demo-option", "--no-such-predict-option", "--no-such-bare-option"]:
        assert any(what in p for p in cp), (what, cp)
    for what in ["benchmarks/bench_nothing.py", "docs/NOTHING.md", "test_nothing",
                 "make no-such-target", "no_such_field"]:
        assert any(what in p for p in pp), (what, pp)
    assert len(cp) == 7 and len(pp) == 5, (cp, pp)    # the missing script: in both
    assert image_problems(text) == ["docs/images/nothing.png does not exist"]
    good = ("`benchmarks/bench_align.py`, `deephemnma predict --rescale`, `make demo`, "
            "`python benchmarks/bench_align.py -n 200 --box 64`, [x](docs/ARCHITECTURE.md), "
            "`scipion3 tests deephemnma.tests.test_chaining`")
    assert command_problems(good) == [] and path_problems(good) == []
