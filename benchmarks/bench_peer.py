"""The peer method (cryoDRGN) beside every deephemnma path, on the same images.

Data: ``-n`` demo-like images (AK, modes 7-9 on the paper's helix, 64 px at
1.3 Å/px, the paper's noise chain and CTF, not phase-flipped), made by
``deephemnma simulate ... --consensus-error 3,0.5``: the truth in
particles.xmd, and consensus poses (the true ones turned by 3° RMS about
random axes, shifted by 0.5 Å RMS). Every path is given the images and their
CTF, plus the consensus poses where it says so, never the true amplitudes;
the particles are split at random into two halves (set 1, set 2) for the
network paths. Each path runs as a user runs it (the commands in
subprocesses, timed from the first to the last):

- ``cryodrgn``: cryoDRGN 4.3.1 (its own venv) given the consensus poses:
  our STAR (RELION 3.1, written by deephemnma.io) -> ``cryodrgn
  parse_pose_star`` / ``parse_ctf_star`` -> ``cryodrgn train_vae`` (zdim 8,
  256x3 encoder and decoder, ``--peer-epochs`` 12, ``--no-analysis``); its
  latent z is scored. A ``cryodrgn backproject_voxel`` of the same
  images with these poses, compared with the reference's model map (and with
  its mirror image), checks the pose conversion (not timed);
- ``cryodrgn-true``: the same given the true poses;
- ``hemnma``: ``deephemnma align`` (HEMNMA's global search) of all images;
- ``from-poses``: ``deephemnma align --from-poses`` from the consensus poses;
- ``network``: the paper's DeepHEMNMA: align set 1 -> ``train`` on its
  labels (the demo's CPU recipe: ``--epochs`` 30, batch 32, lr 3e-4, images
  seen at 32 px, no dropout, coordinate channels, in-plane augmentation) ->
  ``predict`` set 2; scored on set 2;
- ``pose-network``: the pose-aware network: ``align --from-poses`` set 1 ->
  ``train --pose-input`` (consensus poses of set 1; the same recipe with
  ``--pose-epochs`` 15 and a ResNet-18 trunk, ``--pose-trunk``, the demo's)
  -> ``predict`` set 2 from its consensus poses; scored on set 2;
- ``network-refine``: ``deephemnma refine`` of the network's predictions of
  set 2 (its time includes the network's).

Scores, against the true amplitudes of modes 7-9 (deephemnma.core.metrics):
PC1 |r| (how well the PC1 of each method's output follows the truth's PC1)
and the 5-fold cross-validated linear R² of the true amplitudes from that
output (cryoDRGN: its latent z; the others: their amplitudes).

Each path's result is kept as WORK/<data key>/results/PATH.json (the data key
names n, box, pixel size, seed and consensus error); ``--only`` runs some
paths, ``--rerun`` measures them again, and the table is printed from all the
results present for the data key.

    python benchmarks/bench_peer.py [-n 3000] [--only cryodrgn,hemnma,...] [--rerun]
        [--work bench_output/peer] [--peer-venv WORK/peer-venv] [--threads 2]
        [--epochs 30] [--pose-epochs 15] [--peer-epochs 12] [--table]

The cryoDRGN venv: ``make peer-venv`` (tools/peer_venv.sh: CPU torch, then
cryodrgn==4.3.1); this script builds it when a cryoDRGN path needs it.
Wall times hold for the machine and the load of the run that made each row
(its CPU count and load averages are kept in the JSON and printed): rows
measured while other jobs shared the cores are slower than on an idle
machine.

Measured (2 CPU cores, each row in its own run; docs/BENCHMARKS.md has the
table): cryoDRGN given the consensus poses PC1 |r| 0.96, R² 0.945, 3,283 s of
training (beside other jobs); the pose-aware network 0.97, 0.940, 384 s of
training (15 epochs, beside other jobs); HEMNMA from the poses 1.00, 0.999 in
87 s, its global search 1.00, 0.997 in 278 s (idle machine); the paper's
network 0.66, 0.379.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = (7, 8, 9)
PATHS = ("cryodrgn", "cryodrgn-true", "hemnma", "from-poses", "network", "pose-network",
         "network-refine")
METHODS = {
    "cryodrgn": ("cryoDRGN train_vae (zdim 8, 256x3 encoder/decoder)", "consensus"),
    "cryodrgn-true": ("cryoDRGN train_vae (zdim 8, 256x3 encoder/decoder)", "true"),
    "hemnma": ("HEMNMA (deephemnma align, global search)", "no"),
    "from-poses": ("HEMNMA from consensus poses (align --from-poses)", "consensus"),
    "network": ("DeepHEMNMA: align set 1 -> train -> predict set 2", "no"),
    "pose-network": ("pose-aware network: align --from-poses set 1 -> train --pose-input "
                     "-> predict set 2", "consensus"),
    "network-refine": ("DeepHEMNMA then refine (set 2)", "no"),
}


class PathUnavailable(Exception):
    """A path that cannot run here (the message is its table cell)."""


# --------------------------------------------------------------------------
# small pieces (tested in tests/test_bench_peer.py)
def data_key(n, box, pixel_size, seed, consensus):
    """The folder name of one data set: its parameters."""
    return f"n{n}_box{box}_ps{pixel_size:g}_seed{seed}_cons{consensus.replace(',', '-')}"


def scores(features, truth):
    """(PC1 |r|, cross-validated R²) of ``features`` (n, k) against the true
    amplitudes ``truth`` (n, 3)."""
    from deephemnma.core.metrics import cv_r2, pc1_correlation
    return pc1_correlation(features, truth), cv_r2(features, truth)


def halves(n, seed):
    """Random split of rows 0..n-1 into (set 1, set 2), sorted row indices."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def strip(table, keep_poses):
    """The columns a path is given: images, itemId, CTF (a phase shift of 0
    when there is none); poses when ``keep_poses``; never amplitudes."""
    t = table.copy()
    drop = ["nmaDisplacements", "cost"]
    if not keep_poses:
        drop += ["angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY"]
    for k in drop:
        if k in t:
            del t[k]
    if "ctfDefocusU" in t and "ctfPhaseShift" not in t:
        # cryoDRGN's parse_ctf_star reads a missing phase shift as NaN
        t["ctfPhaseShift"] = np.zeros(len(t))
    return t


def format_table(results, unavailable=None):
    """Markdown table of the path results (dicts as saved in the JSON files),
    in PATHS order; ``unavailable``: {path: cell text} for paths that could
    not run."""
    unavailable = unavailable or {}
    lines = ["| path | method | poses given? | images scored | wall time | of which training "
             "| PC1 \\|r\\| | R² |",
             "|---|---|---|---|---|---|---|---|"]
    for p in PATHS:
        if p in results:
            r = results[p]
            lines.append(f"| {p} | {r['method']} | {r['poses']} | {r['n_scored']}/{r['n_input']}"
                         f" | {r['wall_s']:.0f} s | {training_cell(r)} | {r['pc1_r']:.2f}"
                         f" | {r['r2']:.3f} |")
        elif p in unavailable:
            method, poses = METHODS[p]
            lines.append(f"| {p} | {method} | {poses} | | {unavailable[p]} | | | |")
    return "\n".join(lines)


#: the steps that train a network (the peer's or ours)
TRAINING_STEPS = ("train_vae", "train", "train --pose-input")


def training_cell(result):
    """The seconds of a path's training step ('' for the paths without one)."""
    t = [v for k, v in result.get("steps", {}).items() if k in TRAINING_STEPS]
    return f"{sum(t):.0f} s" if t else ""


# --------------------------------------------------------------------------
# running commands
def _env(threads):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    # this checkout's deephemnma in the subprocesses
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in
                                                  env.get("PYTHONPATH", "").split(os.pathsep)
                                                  if p])
    return env


def run(argv, log, threads, env=None):
    """Run ``argv`` (output appended to ``log``); its wall time in seconds.
    A failure stops the benchmark with the log's last lines."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print(f"[bench_peer] $ {' '.join(map(str, argv))}", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, argv))}\n")
        f.flush()
        rc = subprocess.call([str(a) for a in argv], stdout=f, stderr=subprocess.STDOUT,
                             env=env or _env(threads))
    dt = time.perf_counter() - t0
    if rc != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        sys.exit(f"bench_peer: {argv[0]} ... failed (exit {rc}); {log}:\n{tail}")
    return dt


def deephemnma(*args):
    return [sys.executable, "-m", "deephemnma", *args]


NO_POSE_INPUT = "n/a (train has no --pose-input)"


def has_pose_input():
    """Whether ``deephemnma train`` has the pose-aware network's option."""
    out = subprocess.run(deephemnma("train", "--help"), capture_output=True, text=True,
                         env=_env(1)).stdout
    return "--pose-input" in out


# --------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.a = args
        self.ps = args.pixel_size
        self.key = data_key(args.n, args.box, self.ps, args.seed, args.consensus_error)
        self.dir = os.path.abspath(os.path.join(args.work, self.key))
        self.data = os.path.join(self.dir, "data")
        self.inputs = os.path.join(self.dir, "inputs")
        self.results = os.path.join(self.dir, "results")
        self.peer = os.path.abspath(args.peer_venv or os.path.join(args.work, "peer-venv"))
        self.logs = os.path.join(self.dir, "logs")

    # ---- data
    def prepare(self):
        from deephemnma.data import data_file
        from deephemnma.io.metadata import read_metadata, write_star, write_xmd
        if not os.path.isfile(os.path.join(self.data, "consensus.xmd")):
            run(deephemnma("simulate", "--structure", data_file("AK.pdb"), "--out", self.data,
                           "-n", self.a.n, "--box", self.a.box, "--pixel-size", self.ps,
                           "--consensus-error", self.a.consensus_error, "--seed", self.a.seed),
                os.path.join(self.logs, "simulate.log"), self.a.threads)
        self.truth = read_metadata(os.path.join(self.data, "particles.xmd"))
        if os.path.isfile(os.path.join(self.inputs, "done")):
            return
        os.makedirs(self.inputs, exist_ok=True)
        cons = read_metadata(os.path.join(self.data, "consensus.xmd"))
        # cryoDRGN reads the stack in its order: rows must be images 1..n
        from deephemnma.io.metadata import parse_image_ref
        idx = [parse_image_ref(r)[0] for r in self.truth["image"]]
        if idx != list(range(1, len(self.truth) + 1)) or \
                list(cons["itemId"]) != list(self.truth["itemId"]):
            sys.exit("bench_peer: particles.xmd / consensus.xmd rows are not the stack's "
                     "images 1..n in order")
        images, poses = strip(self.truth, False), strip(cons, True)
        write_xmd(os.path.join(self.inputs, "images.xmd"), images)
        write_xmd(os.path.join(self.inputs, "consensus.xmd"), poses)
        write_star(os.path.join(self.inputs, "consensus.star"), poses, self.ps, self.a.box)
        write_star(os.path.join(self.inputs, "true.star"), strip(self.truth, True), self.ps,
                   self.a.box)
        s1, s2 = halves(len(self.truth), self.a.seed + 1)
        for name, rows in (("set1", s1), ("set2", s2)):
            write_xmd(os.path.join(self.inputs, f"{name}.xmd"), images.subset(rows))
            write_xmd(os.path.join(self.inputs, f"{name}_consensus.xmd"), poses.subset(rows))
        open(os.path.join(self.inputs, "done"), "w").close()

    def score_file(self, path, n_input):
        from deephemnma.core.metrics import match_rows
        from deephemnma.io.metadata import read_metadata
        est = read_metadata(path)
        ie, it = match_rows(est, self.truth)
        pc1, r2 = scores(est["nmaDisplacements"][ie], self.truth["nmaDisplacements"][it])
        return {"n_scored": int(len(ie)), "n_input": int(n_input), "pc1_r": pc1, "r2": r2}

    # ---- the common stage options
    def ref_args(self):
        return ["--modes", os.path.join(self.data, "modes.xmd"),
                "--structure", os.path.join(self.data, "reference.pdb"),
                "--pixel-size", self.ps, "--mode-list", "7-9", "--threads", self.a.threads,
                "--device", "cpu"]

    def train_recipe(self, epochs):
        # the demo's CPU recipe
        return ["--pixel-size", self.ps, "--mode-list", "7-9", "--epochs", epochs,
                "--batch-size", 32, "--lr", 3e-4, "--input-size", 32, "--dropout", 0,
                "--device", "cpu"]

    # ---- the paths
    def path_hemnma(self, out, log):
        f = os.path.join(out, "aligned.xmd")
        dt = run(deephemnma("align", "--particles", os.path.join(self.inputs, "images.xmd"),
                            *self.ref_args(), "--out", f), log, self.a.threads)
        return dict(self.score_file(f, self.a.n), wall_s=dt, steps={"align": dt})

    def path_from_poses(self, out, log):
        f = os.path.join(out, "aligned.xmd")
        dt = run(deephemnma("align", "--particles", os.path.join(self.inputs, "consensus.xmd"),
                            "--from-poses", *self.ref_args(), "--out", f), log, self.a.threads)
        return dict(self.score_file(f, self.a.n), wall_s=dt, steps={"align --from-poses": dt})

    def path_network(self, out, log):
        steps = {}
        ali = os.path.join(out, "set1_aligned.xmd")
        steps["align set 1"] = run(deephemnma(
            "align", "--particles", os.path.join(self.inputs, "set1.xmd"), *self.ref_args(),
            "--out", ali), log, self.a.threads)
        net = os.path.join(out, "net")
        steps["train"] = run(deephemnma(
            "train", "--particles", os.path.join(out, "set1_aligned_kept.xmd"),
            *self.train_recipe(self.a.epochs), "--coord-channels", "--augment", "--out", net),
            log, self.a.threads)
        pred = os.path.join(out, "set2_predicted.xmd")
        steps["predict set 2"] = run(deephemnma(
            "predict", "--model", os.path.join(net, "model.pt"), "--particles",
            os.path.join(self.inputs, "set2.xmd"), "--pixel-size", self.ps, "--device", "cpu",
            "--out", pred), log, self.a.threads)
        n2 = self.a.n - self.a.n // 2
        return dict(self.score_file(pred, n2), wall_s=sum(steps.values()), steps=steps)

    def path_pose_network(self, out, log):
        if not has_pose_input():
            raise PathUnavailable(NO_POSE_INPUT)
        steps = {}
        ali = os.path.join(out, "set1_aligned.xmd")
        set1 = os.path.join(self.inputs, "set1_consensus.xmd")
        steps["align --from-poses set 1"] = run(deephemnma(
            "align", "--particles", set1, "--from-poses", *self.ref_args(), "--out", ali),
            log, self.a.threads)
        net = os.path.join(out, "net")
        steps["train --pose-input"] = run(deephemnma(
            "train", "--particles", os.path.join(out, "set1_aligned_kept.xmd"),
            *self.train_recipe(self.a.pose_epochs), "--pose-input", "--consensus", set1,
            "--trunk", self.a.pose_trunk,
            "--structure", os.path.join(self.data, "reference.pdb"),
            "--modes", os.path.join(self.data, "modes.xmd"), "--out", net),
            log, self.a.threads)
        pred = os.path.join(out, "set2_predicted.xmd")
        steps["predict set 2"] = run(deephemnma(
            "predict", "--model", os.path.join(net, "model.pt"), "--particles",
            os.path.join(self.inputs, "set2_consensus.xmd"), "--pixel-size", self.ps,
            "--device", "cpu", "--out", pred), log, self.a.threads)
        n2 = self.a.n - self.a.n // 2
        return dict(self.score_file(pred, n2), wall_s=sum(steps.values()), steps=steps)

    def path_network_refine(self, out, log):
        net = self.load("network")
        pred = os.path.join(self.dir, "runs", "network", "set2_predicted.xmd")
        if net is None or not os.path.isfile(pred):
            net = self.measure("network", rerun=True)
        f = os.path.join(out, "refined.xmd")
        dt = run(deephemnma("refine", "--particles", pred, *self.ref_args(), "--out", f),
                 log, self.a.threads)
        steps = dict(net["steps"], refine=dt)
        return dict(self.score_file(f, net["n_input"]), wall_s=sum(steps.values()),
                    steps=steps)

    def path_cryodrgn(self, out, log, star="consensus.star"):
        self.peer_venv()
        cd = os.path.join(self.peer, "bin", "cryodrgn")
        star = os.path.join(self.inputs, star)
        pose, ctf = os.path.join(out, "pose.pkl"), os.path.join(out, "ctf.pkl")
        env = _env(self.a.threads)
        env.pop("PYTHONPATH")
        steps = {}
        steps["parse_pose_star"] = run([cd, "parse_pose_star", star, "-o", pose,
                                        "-D", self.a.box, "--Apix", self.ps], log, 0, env)
        steps["parse_ctf_star"] = run([cd, "parse_ctf_star", star, "-o", ctf,
                                       "-D", self.a.box, "--Apix", self.ps], log, 0, env)
        vae = os.path.join(out, "train_vae")
        steps["train_vae"] = run([
            cd, "train_vae", os.path.join(self.data, "particles.mrcs"), "--poses", pose,
            "--ctf", ctf, "--zdim", 8, "-n", self.a.peer_epochs, "--enc-dim", 256,
            "--enc-layers", 3, "--dec-dim", 256, "--dec-layers", 3, "--no-analysis",
            "--checkpoint", self.a.peer_epochs, "--seed", self.a.seed, "-o", vae],
            log, 0, env)
        z = os.path.join(out, "z.npy")
        # z.pkl holds z_mu then z_logvar, pickled by the peer's numpy: read it there
        run([os.path.join(self.peer, "bin", "python"), "-c",
             "import pickle, sys, numpy as np; f = open(sys.argv[1], 'rb'); "
             "np.save(sys.argv[2], np.asarray(pickle.load(f), np.float64))",
             os.path.join(vae, "z.pkl"), z], log, 0, env)
        zmu = np.load(z)
        pc1, r2 = scores(zmu, self.truth["nmaDisplacements"])
        res = dict(n_scored=int(len(zmu)), n_input=self.a.n, pc1_r=pc1, r2=r2,
                   wall_s=sum(steps.values()), steps=steps)
        res["pose_check"] = self.pose_check(cd, pose, ctf, out, log, env)
        return res

    def path_cryodrgn_true(self, out, log):
        return self.path_cryodrgn(out, log, star="true.star")

    def pose_check(self, cd, pose, ctf, out, log, env):
        """Correlation of cryoDRGN's backprojection (these poses and CTF) with
        the reference's model map, and with its mirror image (a handedness
        or rotation convention error shows as a low first value)."""
        import mrcfile
        from scipy.ndimage import gaussian_filter
        bp = os.path.join(out, "backproject")
        run([cd, "backproject_voxel", os.path.join(self.data, "particles.mrcs"), "--poses",
             pose, "--ctf", ctf, "--no-half-maps", "-o", bp], log, 0, env)
        ref = os.path.join(out, "reference_map.mrc")
        run(deephemnma("model-map", "--structure", os.path.join(self.data, "reference.pdb"),
                       "--box", self.a.box, "--pixel-size", self.ps, "--out", ref), log, 1)
        a = gaussian_filter(mrcfile.read(os.path.join(bp, "backproject.mrc")).astype(float), 1.5)
        b = gaussian_filter(mrcfile.read(ref).astype(float), 1.5)

        def corr(x, y):
            x, y = x - x.mean(), y - y.mean()
            return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))
        return {"map_corr": corr(a, b), "mirror_corr": corr(a, b[::-1])}

    def peer_venv(self):
        if os.path.isfile(os.path.join(self.peer, ".built")):
            return
        print(f"[bench_peer] building the cryoDRGN venv {self.peer} (tools/peer_venv.sh)",
              flush=True)
        env = dict(os.environ, PEER_VENV=self.peer)
        if subprocess.call(["bash", os.path.join(ROOT, "tools", "peer_venv.sh")], env=env):
            sys.exit(f"bench_peer: could not build the cryoDRGN venv {self.peer}")

    # ---- results
    def result_path(self, path):
        return os.path.join(self.results, f"{path}.json")

    def load(self, path):
        try:
            with open(self.result_path(path)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def measure(self, path, rerun=False):
        """Run ``path`` (its cached result unless ``rerun``) and save it."""
        old = self.load(path)
        if old is not None and not rerun:
            return old
        out = os.path.join(self.dir, "runs", path)
        shutil.rmtree(out, ignore_errors=True)       # the commands would resume
        os.makedirs(out)
        log = os.path.join(self.logs, f"{path}.log")
        if os.path.exists(log):
            os.remove(log)
        load0 = os.getloadavg()
        res = getattr(self, "path_" + path.replace("-", "_"))(out, log)
        method, poses = METHODS[path]
        res.update(path=path, method=method, poses=poses, data_key=self.key,
                   settings=self.settings(path), cpus=os.cpu_count(),
                   load_before=list(load0), load_after=list(os.getloadavg()),
                   date=time.strftime("%Y-%m-%d %H:%M"))
        os.makedirs(self.results, exist_ok=True)
        with open(self.result_path(path), "w") as f:
            json.dump(res, f, indent=1)
        print(f"[bench_peer] {path}: {res['wall_s']:.0f} s, PC1 |r| {res['pc1_r']:.3f}, "
              f"R² {res['r2']:.3f}", flush=True)
        return res

    def settings(self, path):
        if path.startswith("cryodrgn"):
            return {"epochs": self.a.peer_epochs, "zdim": 8, "enc": "256x3", "dec": "256x3",
                    "threads": self.a.threads}
        if path == "pose-network":
            return {"epochs": self.a.pose_epochs, "trunk": self.a.pose_trunk,
                    "threads": self.a.threads}
        if "network" in path:
            return {"epochs": self.a.epochs, "threads": self.a.threads}
        return {"threads": self.a.threads}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=3000, help="images")
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=1.3)
    ap.add_argument("--seed", type=int, default=0, help="the data's (the halves: seed + 1)")
    ap.add_argument("--consensus-error", default="3,0.5", metavar="DEG,Å")
    ap.add_argument("--only", default=",".join(PATHS),
                    help=f"paths to run, among {','.join(PATHS)} (default: all)")
    ap.add_argument("--rerun", action="store_true", help="measure the paths again")
    ap.add_argument("--table", action="store_true", help="only print the table")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench_output", "peer"))
    ap.add_argument("--peer-venv", default=None,
                    help="the cryoDRGN venv (default: WORK/peer-venv; built when absent)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of every command")
    ap.add_argument("--epochs", type=int, default=30, help="the networks' training epochs")
    ap.add_argument("--pose-epochs", type=int, default=15,
                    help="the pose-aware network's training epochs (the demo's)")
    ap.add_argument("--pose-trunk", default="resnet18", choices=("resnet18", "resnet34"),
                    help="the pose-aware network's trunk")
    ap.add_argument("--peer-epochs", type=int, default=12, help="cryoDRGN's epochs")
    args = ap.parse_args(argv)
    only = [p for p in args.only.split(",") if p]
    bad = [p for p in only if p not in PATHS]
    if bad:
        ap.exit(2, f"bench_peer: --only {','.join(bad)}: not a path ({', '.join(PATHS)})\n")
    b = Bench(args)
    unavailable = {}
    if not args.table:
        b.prepare()
        for p in only:
            try:
                b.measure(p, rerun=args.rerun)
            except PathUnavailable as e:
                unavailable[p] = str(e)
    results = {p: r for p in PATHS if (r := b.load(p)) is not None}
    if "pose-network" not in results and not has_pose_input():
        unavailable["pose-network"] = NO_POSE_INPUT
    print(f"\n{args.n} demo-like AK images ({b.key}): {args.box} px, {args.pixel_size:g} Å/px, "
          f"SNR 0.1 at ~0.325 Å/px then downscaled (the paper's chain), CTF 5000 Å "
          f"underfocus; consensus poses {args.consensus_error.replace(',', '° / ')} Å RMS off "
          "the truth; scored against the true amplitudes of modes 7-9\n")
    print(format_table(results, unavailable))
    print()
    for p, r in results.items():
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in r["steps"].items())
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        note = f"- {p} ({r['date']}, {r['cpus']} CPUs, load {r['load_before'][0]:.1f} -> " \
               f"{r['load_after'][0]:.1f}; {settings}): {steps}"
        if "pose_check" in r:
            c = r["pose_check"]
            note += (f"; pose check: backprojection vs reference map r = {c['map_corr']:.2f} "
                     f"(mirror {c['mirror_corr']:.2f})")
        print(note)
    print("\nWall times: each row's own run on this machine; other jobs sharing the cores "
          "(load above) slow them.")


if __name__ == "__main__":
    main()
