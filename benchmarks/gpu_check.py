"""DeepHEMNMA on a GPU, proved in one short run: five timed steps,
written to OUT/report.json and OUT/report.md after every step (a run cut
short still leaves what it did).

  (a) the core test subset on the device: ``pytest -m gpu`` (projector, CTF,
      align, train step, predict, reconstruct: device results equal CPU ones
      within tolerance; the torchvision parity test of the ResNet-34);
  (b) HEMNMA (the align stage) on >= 2,000 images of the paper's protocol at
      128 px: images/s (goal >= 200) and accuracy vs ground truth beside the
      paper's HEMNMA (Table 1); more images are aligned, as the budget
      allows, to be the training labels of (c) (paper: 20,000);
  (c) the joint network trained on those HEMNMA labels by the paper's
      protocol (Mahalanobis 3.2, 2,000 validation and 2,000 small-test
      images, 128 px) for as many epochs as ~5 minutes allow (the one-cycle
      schedule spans them; --schedule paper for the paper's optimiser),
      training images/s, and Table 1 on the small test set (goal: beat the
      paper's inferred-vs-ground-truth row: amplitudes 7.5, angles 2.5 deg,
      shifts 0.2 Å); a probe of the paper's schedule (batch 2) gives its
      images/s and the hours its 400 epochs would take;
  (d) inference: the Predictor on >= 100,000 images (goal >= 20,000
      images/s) and the end-to-end predict stage (reading, phase flip,
      writing) on 100,000 rows;
  (e) the Fig. 7 comparison (bench_fig7.py): ten groups along PC1 of the
      network's amplitudes, maps from the 256 px images with ground-truth,
      HEMNMA and network poses and the network's poses refined by local HEMNMA
      (the refine stage), FSC 0.5/0.143 against each group's centroid.

``--tiny --device cpu`` runs every step on small sizes in a few minutes (the
test suite runs it: tests/test_gpu_check.py), so this script cannot rot.

Preparation, once, on a machine with network, in the repository root (the GPU
machines have Python 3.12, a CUDA torch, numpy 2, scipy, scikit-learn,
matplotlib, torchvision, pytest; no Scipion, no ProDy, no mrcfile, no network;
.whl/ is in .gitignore):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl prody==2.6.1 biopython==1.85 pyparsing==3.1.1 mrcfile==1.5.4

(ProDy reads the structures: its only cp312 wheel is manylinux_2_35, 38 MB;
it imports Bio (biopython) and pins pyparsing <= 3.1.1. mrcfile reads and
writes the .mrcs stacks. The wheels total ~41 MB of the 64 MiB that travel.)
Then on the GPU machine (carry ``.whl``), from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 benchmarks/gpu_check.py --out $OUT

Options: --budget (seconds for the whole run, default 540), --steps (e.g.
'a,b'), sizes (--hemnma-n, --train-s, --infer-n, --fig7-n), --schedule.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, ROOT) if p not in sys.path]
os.environ.setdefault("DEEPHEMNMA_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import paper  # noqa: E402

RESERVE_DE = 190.0      # s kept for steps (d) and (e) when (b) and (c) size themselves
MIN_TRAIN = 120.0       # s of training (c) that the extra HEMNMA labels of (b) leave
STEPS = {"a": "core tests on the device (pytest -m gpu)",
         "b": "HEMNMA throughput and accuracy",
         "c": "training on HEMNMA labels (the paper's protocol)",
         "d": "inference throughput and end-to-end predict",
         "e": "Fig. 7 group maps from ground-truth, HEMNMA and network poses"}


class Check:
    """The run's state: sizes, deadline, the report and its files."""

    def __init__(self, args):
        import torch
        self.args = args
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + args.budget
        self.device = args.device
        self.tiny = args.tiny
        self.work = args.work or tempfile.mkdtemp(prefix="gpu_check_")
        os.makedirs(args.out, exist_ok=True)
        self.box = 32 if self.tiny else 128
        self.recon_box = 64 if self.tiny else 256
        self.ps = paper.pixel_size_for(self.box)
        self.ref = None
        self.data = {}
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        self.report = {
            "script": "benchmarks/gpu_check.py", "argv": sys.argv[1:],
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": self.device, "gpu": gpu, "tiny": self.tiny,
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "cuda": torch.version.cuda,
            "host": platform.node(), "cpus": os.cpu_count(), "budget_s": args.budget,
            "sizes": {"box": self.box, "pixel_size": self.ps, "recon_box": self.recon_box},
            "steps": {}}

    def left(self):
        return self.deadline - time.perf_counter()

    def step(self, key, fn, need=0.0):
        """Run step ``key`` (timed; failures recorded, never fatal)."""
        rec = {"title": STEPS[key], "status": "running"}
        self.report["steps"][key] = rec
        if self.left() < need:
            rec.update(status="skipped", reason=f"budget: {self.left():.0f} s left, "
                                                f"needs ~{need:.0f} s")
            self.write()
            return
        say(f"--- ({key}) {STEPS[key]} ({self.left():.0f} s of budget left)")
        t0 = time.perf_counter()
        try:
            rec["results"] = fn(self) or {}
            rec["status"] = "ok"
        except Exception as e:  # recorded in the report; the next steps still run
            rec["status"] = "failed"
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc()[-4000:]
            say(rec["traceback"])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        say(f"--- ({key}) {rec['status']} in {rec['seconds']} s")
        self.write()

    def write(self):
        self.report["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        with open(os.path.join(self.args.out, "report.json"), "w") as f:
            json.dump(self.report, f, indent=1, default=_json)
        with open(os.path.join(self.args.out, "report.md"), "w") as f:
            f.write(markdown(self.report))

    def reference(self):
        if self.ref is None:
            self.ref = paper.reference()
        return self.ref


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def say(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# (a)
def step_a(c):
    """pytest -m gpu on the device (DEEPHEMNMA_TEST_DEVICE), in a subprocess."""
    home = os.path.join(c.work, "scipion_home")
    os.makedirs(os.path.join(home, "config"), exist_ok=True)
    open(os.path.join(home, "config", "hosts.conf"), "a").close()
    env = dict(os.environ, DEEPHEMNMA_TEST_DEVICE=c.device, DEEPHEMNMA_GPU_CHECK_NESTED="1",
               # tests/conftest.py sets Scipion up unless SCIPION_HOME has a hosts.conf:
               # this one lets the tests run where Scipion is not installed
               SCIPION_HOME=home,
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "-rs", os.path.join(ROOT, "tests", "test_gpu_check.py"),
           os.path.join(ROOT, "tests", "test_network.py")]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=max(60, min(300, c.left() - 30)))
    out = r.stdout + r.stderr
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out):
        counts[what] = int(n)
    res = {"returncode": r.returncode, "counts": counts, "seconds": time.perf_counter() - t0,
           "output_tail": out[-3000:]}
    if r.returncode != 0:
        raise RuntimeError(f"pytest -m gpu failed ({counts}):\n{out[-2500:]}")
    res["met"] = counts.get("passed", 0) > 0 and not counts.get("failed")
    return res


# --------------------------------------------------------------------------
# (b)
def _align_options(c):
    if c.tiny:
        return {"angular_step": 40.0, "coarse_iters": 4, "fine_iters": 3, "batch_size": 16,
                "chunk": 64}
    return {"batch_size": c.args.align_batch, "chunk": 4096}


def step_b(c):
    """Simulate image set 1, HEMNMA on a probe of >= 2,000 images (throughput,
    accuracy), then on as many more as the budget allows (labels for (c))."""
    ref = c.reference()
    n = c.args.hemnma_n or (48 if c.tiny else 20000)
    probe = min(n, 24 if c.tiny else 2000)
    folder = os.path.join(c.work, "set1")
    t0 = time.perf_counter()
    gt = paper.simulate_set(folder, n, c.box, 1, ref, "paper", device=c.device)
    t_sim = time.perf_counter() - t0
    c.data.update(gt1=gt, set1=folder)        # (c) can train on the ground truth without (b)
    say(f"simulated {n} images of {c.box} px in {t_sim:.0f} s")
    a = paper.write_rows(gt.subset(np.arange(probe)), os.path.join(folder, "probe.xmd"))
    try:
        hem, _, t_probe = paper.hemnma(os.path.join(folder, "probe.xmd"), folder,
                                       os.path.join(c.work, "hemnma", "probe.xmd"), c.ps,
                                       c.device, **_align_options(c))
    except RuntimeError as e:                # CUDA out of memory: a smaller batch
        if "out of memory" not in str(e) or c.args.align_batch <= 64:
            raise
        say(f"HEMNMA batch {c.args.align_batch}: out of memory; batch 64")
        c.args.align_batch = 64
        hem, _, t_probe = paper.hemnma(os.path.join(folder, "probe.xmd"), folder,
                                       os.path.join(c.work, "hemnma", "probe.xmd"), c.ps,
                                       c.device, **_align_options(c))
    rate = probe / t_probe
    say(f"HEMNMA: {probe} images in {t_probe:.1f} s ({rate:.1f} images/s)")
    acc = paper.compare(hem, a, c.ps, ref)
    ang = acc["angles_deg"]["mean"]
    tables = [hem]
    # more labels for (c), within this step's share of the budget
    allow = min(c.args.hemnma_s, c.left() - MIN_TRAIN - RESERVE_DE) if not c.tiny else 1e9
    more = int(min(n - probe, max(0, allow) * rate * 0.9))
    t_more = 0.0
    if more > 0:
        paper.write_rows(gt.subset(np.arange(probe, probe + more)),
                         os.path.join(folder, "rest.xmd"))
        h2, _, t_more = paper.hemnma(os.path.join(folder, "rest.xmd"), folder,
                                     os.path.join(c.work, "hemnma", "rest.xmd"), c.ps, c.device,
                                     **_align_options(c))
        tables.append(h2)
        say(f"HEMNMA: {more} more images in {t_more:.1f} s")
    from deephemnma.core.outliers import mahalanobis_filter
    from deephemnma.io.metadata import Table
    labels = Table.concatenate(tables)
    keep, _ = mahalanobis_filter(labels["nmaDisplacements"], 3.2)
    kept = paper.write_rows(labels.subset(keep), os.path.join(c.work, "hemnma", "kept.xmd"))
    c.data.update(kept=kept)
    return {"images_simulated": n, "simulate_s": t_sim,
            "simulate_images_per_s": n / t_sim, "probe_images": probe, "probe_s": t_probe,
            "images_per_s": rate, "goal_images_per_s": 200, "met": bool(rate >= 200),
            "hemnma_vs_ground_truth": acc, "paper_hemnma_vs_ground_truth":
                paper.TABLE1["HEMNMA vs ground truth"], "angles_mean_deg": ang,
            "labelled_images": len(labels), "kept_mahalanobis_3.2": int(keep.sum()),
            "more_aligned": more, "more_s": t_more,
            "options": _align_options(c)}


# --------------------------------------------------------------------------
# (c)
def _probe_rate(c, images, table, cfg, steps):
    """Training images/s of ``cfg`` over ``steps`` steps (after 2 warm-up steps)."""
    import torch
    from deephemnma.core.training import Trainer
    tr = Trainer(images, table, np.arange(len(table)), cfg)
    rows = np.arange(len(table))
    rng = np.random.default_rng(0)
    for k in range(steps + 2):
        if k == 2:
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        b = rng.choice(rows, cfg.batch_size, replace=len(rows) < cfg.batch_size)
        tr.step(*tr.batch(np.sort(b)))
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def step_c(c):
    from deephemnma.core.config import PAPER_SCHEDULE, TrainConfig
    from deephemnma.io.stacks import load_images
    gt1 = c.data["gt1"]
    labels = "HEMNMA (Mahalanobis 3.2)"
    if "kept" in c.data:
        kept = c.data["kept"]
    else:                          # (b)'s HEMNMA failed: the network learns the ground truth
        labels = "ground truth (HEMNMA of (b) failed)"
        kept = paper.write_rows(gt1, os.path.join(c.work, "hemnma", "kept.xmd"))
    n = len(kept)
    val = test = max(4, min(2000, n // 10))
    batch = c.args.batch_size or (8 if c.tiny else 64)
    insize = 16 if c.tiny else c.box
    base = dict(architecture="joint", input_size=insize, device=c.device, dropout=0.5)
    images = load_images(kept)
    # throughput probes: our settings, and the paper's schedule (batch 2)
    ours = TrainConfig(batch_size=batch, lr=c.args.lr, **base)
    rate = _probe_rate(c, images, kept, ours, 3 if c.tiny else 30)
    prate = _probe_rate(c, images, kept, TrainConfig(**dict(base, **{
        k: v for k, v in PAPER_SCHEDULE.items() if k not in ("patience", "dropout")})),
        3 if c.tiny else 60)
    n_train = n - val - test
    paper_hours = 400 * 14055 / prate / 3600
    budget = c.args.train_s if not c.tiny else 0
    budget = min(budget, c.left() - RESERVE_DE) if not c.tiny else 0
    if c.args.schedule == "paper":
        cfg = dict(PAPER_SCHEDULE)
        epoch_rate = prate
    else:
        cfg = dict(schedule="onecycle", batch_size=batch, lr=c.args.lr, patience=1000)
        epoch_rate = rate
    # epochs that fit: each epoch also evaluates the validation images and saves
    per_epoch = n_train / epoch_rate + val / (4 * epoch_rate) + 2.0
    epochs = 1 if c.tiny else max(1, int(budget / per_epoch))
    if c.args.schedule == "paper":
        cfg.update(epochs=epochs, patience=1000)
    else:
        cfg["epochs"] = epochs
    say(f"training: {n_train} images, {rate:.0f} images/s (batch {batch}), paper's schedule "
        f"{prate:.0f} images/s; {epochs} epochs in ~{budget:.0f} s")
    res, t_train = paper.train(os.path.join(c.work, "hemnma", "kept.xmd"),
                               os.path.join(c.work, "net"), pixel_size=c.ps, mode_list="7-9",
                               val_fraction=val / n, test_fraction=test / n,
                               input_size=insize, device=c.device, dropout=0.5,
                               **{k: v for k, v in cfg.items() if k != "dropout"})
    split = np.load(res.split)
    small = paper.write_rows(kept.subset(split["test"]), os.path.join(c.work, "small.xmd"))
    pred, _ = paper.predict(res.model, os.path.join(c.work, "small.xmd"),
                            os.path.join(c.work, "pred_small.xmd"), c.device)
    truth = gt1.subset(np.isin(gt1["itemId"], small["itemId"]))
    ref = c.reference()
    cols = {"inferred vs ground truth": paper.compare(pred, truth, c.ps, ref),
            "inferred vs HEMNMA": paper.compare(pred, small, c.ps, ref),
            "HEMNMA vs ground truth": paper.compare(small, truth, c.ps, ref)}
    g = cols["inferred vs ground truth"]
    p = paper.TABLE1["inferred vs ground truth"]
    met = (g["amplitude_mae_mean"]["mean"] <= p["amplitude_mae_mean"][0]
           and g["angles_deg"]["mean"] <= p["angles_deg"][0]
           and max(g["shift_x_A"]["mean"], g["shift_y_A"]["mean"]) <= p["shift_x_A"][0])
    c.data.update(model=res.model)
    seen = res.n_train * res.epochs_done
    return {"labels": labels, "train_images": res.n_train,
            "val_images": res.n_val, "small_test_images": res.n_test,
            "schedule": c.args.schedule, "batch_size": cfg["batch_size"], "lr": cfg["lr"],
            "epochs": res.epochs_done, "best_epoch": res.best_epoch, "train_s": t_train,
            "train_images_per_s": seen / max(t_train, 1e-9), "probe_images_per_s": rate,
            "paper_schedule_images_per_s": prate,
            "paper_schedule_400_epochs_14055_images_h": paper_hours,
            "table1": cols, "paper_table1": paper.TABLE1, "goal": "beat paper Table 1 "
            "inferred vs ground truth (7.5, 2.5 deg, 0.2 Å)", "met": bool(met),
            "model": res.model}


# --------------------------------------------------------------------------
# (d)
def step_d(c):
    import torch
    from deephemnma.core.inference import Predictor
    from deephemnma.core.models import load_model
    from deephemnma.core.training import flip_ctf
    from deephemnma.io.metadata import Table, image_ref, write_xmd
    from deephemnma.io.stacks import load_images
    model = c.data["model"]
    nets, meta = load_model(model, c.device)
    kept = c.data["kept"] if "kept" in c.data else c.data["gt1"]
    base = load_images(kept)
    n = c.args.infer_n or (2048 if c.tiny else 100000)
    batch = c.args.infer_batch or (256 if c.tiny else 1024)
    reps = int(np.ceil(n / len(base)))
    big = np.concatenate([base] * reps)[:n]
    ctf = flip_ctf(Table.concatenate([kept] * reps).subset(np.arange(n)))
    pred = Predictor(nets, meta, c.device, batch)
    pred.check(c.box, c.ps)
    pred.predict(big[:batch], ctf.subset(np.arange(batch)))          # warm-up
    if c.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pred.predict(big, ctf)
    if c.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_net = time.perf_counter() - t0
    rate = n / t_net
    del big
    # end to end: the predict stage on n rows of the stack of image set 1
    rows = np.arange(n) % len(c.data["gt1"])
    gt = c.data["gt1"]
    t = gt.subset(rows)
    t["itemId"] = np.arange(1, n + 1)
    t["image"] = np.array([image_ref(int(i) + 1, "particles.mrcs") for i in rows], dtype=object)
    t.root = c.data["set1"]
    write_xmd(os.path.join(c.data["set1"], "e2e.xmd"), t)
    t0 = time.perf_counter()
    _, out = paper.predict(model, os.path.join(c.data["set1"], "e2e.xmd"),
                           os.path.join(c.work, "e2e_pred.xmd"), c.device, batch_size=batch)
    t_e2e = time.perf_counter() - t0
    return {"images": n, "batch_size": batch, "predictor_s": t_net, "images_per_s": rate,
            "goal_images_per_s": 20000, "met": bool(rate >= 20000),
            "end_to_end_rows": out.n_predicted, "end_to_end_s": t_e2e,
            "end_to_end_images_per_s": out.n_predicted / t_e2e,
            "phase_flipped": out.n_flipped,
            "paper_inference_images_per_s": 50000 / (paper.TIMES["infer_50000_min_per_type"]
                                                     * 60) / 3}


# --------------------------------------------------------------------------
# (e)
def step_e(c):
    import bench_fig7
    left = c.left()
    n = c.args.fig7_n or (150 if c.tiny else 8000 if left > 200 else 4000)
    sub = 4 if c.tiny else 899                # at most the smallest group's size
    hem = c.tiny or left > 150
    whole = c.tiny or left > 260              # maps of the whole groups too (10 more)
    say(f"Fig. 7: {n} images, HEMNMA poses {hem}, whole-group maps {whole}")
    r = bench_fig7.run(c.data["model"], n=n, box=c.box, recon_box=c.recon_box, groups=10,
                       subgroup=sub, hemnma=hem, device=c.device,
                       work=os.path.join(c.work, "fig7"), progress=say,
                       align_options=_align_options(c), whole=whole,
                       refine=hem)            # the network's poses refined by local HEMNMA
    r["markdown"] = bench_fig7.markdown(r)
    r["paper"] = paper.FIG7
    d = [g["fsc"]["network"]["fsc_0.5"] - g["fsc"]["ground truth"]["fsc_0.5"]
         for g in r["groups"]]
    r["network_minus_truth_fsc_0.5_A"] = {"median": float(np.median(d)), "max": float(max(d))}
    return r


# --------------------------------------------------------------------------
def _fmt(v):
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.2f} ± {v['std']:.2f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def markdown(rep):
    lines = [f"# gpu_check report ({rep['started']})", "",
             f"device {rep['device']} ({rep['gpu'] or 'no GPU'}), torch {rep['torch']} (CUDA "
             f"{rep['cuda']}), numpy {rep['numpy']}, Python {rep['python']}, {rep['cpus']} CPUs"
             f"{', TINY sizes' if rep['tiny'] else ''}; {rep.get('elapsed_s', 0)} s of "
             f"{rep['budget_s']} s budget", "",
             "| step | status | s | goal met | key numbers |", "|---|---|---|---|---|"]
    keys = {"a": ["counts"], "b": ["images_per_s", "angles_mean_deg", "labelled_images"],
            "c": ["labels", "train_images", "epochs", "train_images_per_s",
                  "paper_schedule_images_per_s", "paper_schedule_400_epochs_14055_images_h"],
            "d": ["images_per_s", "end_to_end_images_per_s"],
            "e": ["subgroup", "network_minus_truth_fsc_0.5_A"]}
    for k, s in rep["steps"].items():
        r = s.get("results", {})
        nums = ", ".join(f"{x} {_fmt(r[x])}" for x in keys[k] if x in r)
        lines.append(f"| ({k}) {s['title']} | {s['status']} | {s.get('seconds', '')} | "
                     f"{r.get('met', '')} | {nums or s.get('error', s.get('reason', ''))} |")
    b = rep["steps"].get("b", {}).get("results")
    if b:
        lines += ["", f"## (b) HEMNMA vs ground truth ({b['probe_images']} images, "
                      f"{rep['sizes']['box']} px)", "",
                  paper.table({"ours": b["hemnma_vs_ground_truth"],
                               "paper Table 1": b["paper_hemnma_vs_ground_truth"]},
                              paper.METRICS[:7])]
    cc = rep["steps"].get("c", {}).get("results")
    if cc:
        lines += ["", f"## (c) Table 1, small test set: network trained on HEMNMA labels "
                      f"({cc['train_images']} training images, {cc['epochs']} epochs, "
                      f"{cc['schedule']} schedule, batch {cc['batch_size']})", "",
                  paper.table({**cc["table1"], **paper.paper_columns(paper.TABLE1, "paper")}),
                  "", paper.table({"ours": cc["table1"]["inferred vs ground truth"],
                                   **paper.paper_columns(paper.TABLE2, "paper Table 2")},
                                  paper.METRICS[7:])]
    e = rep["steps"].get("e", {}).get("results")
    if e and "markdown" in e:
        lines += ["", "## (e) " + e["markdown"].lstrip("# ")]
    for k, s in rep["steps"].items():
        if s["status"] == "failed":
            lines += ["", f"## ({k}) failed", "", "```", s.get("traceback", s.get("error")),
                      "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="report.json and report.md go here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small sizes (minutes on a CPU)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    ap.add_argument("--steps", default="abcde", help="which steps, e.g. 'ab'")
    ap.add_argument("--work", default=None, help="data and models here (default: a temp dir)")
    ap.add_argument("--hemnma-n", type=int, default=None, help="image set 1 (default 20,000)")
    ap.add_argument("--hemnma-s", type=float, default=120.0,
                    help="seconds of (b) for HEMNMA labels beyond the 2,000-image probe")
    ap.add_argument("--align-batch", type=int, default=256)
    ap.add_argument("--train-s", type=float, default=240.0,
                    help="seconds of training in (c) at most (less when the budget is short)")
    ap.add_argument("--schedule", choices=["onecycle", "paper"], default="onecycle")
    ap.add_argument("--batch-size", type=int, default=None, help="(c) default 64")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--infer-n", type=int, default=None, help="(d) default 100,000")
    ap.add_argument("--infer-batch", type=int, default=None, help="(d) default 1024")
    ap.add_argument("--fig7-n", type=int, default=None, help="(e) default 10,000")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device here; --device cpu --tiny runs the small check")
    c = Check(args)
    say(f"gpu_check: {c.report['gpu'] or c.device}, torch {c.report['torch']}, numpy "
        f"{c.report['numpy']}; work in {c.work}; report in {args.out}")
    plan = [("a", step_a, 30), ("b", step_b, 60), ("c", step_c, 60), ("d", step_d, 30),
            ("e", step_e, 60)]
    for key, fn, need in plan:
        if key in args.steps:
            if key in "cde" and "gt1" not in c.data:
                c.report["steps"][key] = {"title": STEPS[key], "status": "skipped",
                                          "reason": "needs (b)"}
                c.write()
                continue
            if key in "de" and "model" not in c.data:
                c.report["steps"][key] = {"title": STEPS[key], "status": "skipped",
                                          "reason": "needs the model of (c)"}
                c.write()
                continue
            c.step(key, fn, 0 if args.tiny else need)
    c.write()
    failed = [k for k, s in c.report["steps"].items() if s["status"] == "failed"]
    say(f"gpu_check: done in {time.perf_counter() - c.t0:.0f} s; "
        f"{'failed: ' + ','.join(failed) if failed else 'no step failed'}; "
        f"{os.path.join(args.out, 'report.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
