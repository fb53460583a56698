"""The ContinuousFlex round trip, run INSIDE the ContinuousFlex test venv
(tools/continuousflex_venv.sh) by tests/test_continuousflex_roundtrip.py:

    PYTHONPATH=<xmipp-python> CONTINUOUSFLEX_HOME=<folder> \\
        DEEPHEMNMA_EXTRA_TEST_DATA=<folder with continuousflex/smallstack_img.stk> \\
        .cflex-venv/bin/python tests/continuousflex_roundtrip.py OUT_FOLDER

In one Scipion project, with ContinuousFlex's real protocols and viewers
(scipion-em-continuousflex 3.4.2, no Xmipp binaries):

1. our NMA of AK.pdb (modes 1-10) -> ContinuousFlex's FlexNMAViewer plots its
   maximum-shift and mode-7 distance profiles from our run folder;
2. our HEMNMA alignment (deephemnma.stages.align, what our align protocol
   runs) of ContinuousFlex's 10 test particles with our modes 7-8 ->
   FlexProtAlignmentNMA(inputModes = our modes, copyDeformations = our
   aligned.xmd): it finds atoms.pdb beside our modes.sqlite, reads our
   modes/vec.N, and its particles carry our angles, shifts and amplitudes;
   the same with our NMA of an EM map (pseudoatoms.pdb, Xmipp's format);
3. FlexProtDimredNMA (scikit-learn PCA) on that alignment;
4. ContinuousFlex's particles -> our train and landscape protocols;
5. FlexAlignmentNMAViewer and FlexDimredNMAViewer plot our results (PNG).

Every check is an assert; the numbers measured go to OUT_FOLDER/result.json.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CPU1 = dict(useGpu=False, numberOfThreads=1)   # 2 shared cores: no thread oversubscription
from deephemnma.data import data_file  # noqa: E402
from deephemnma.data.testdata import locate  # noqa: E402

AK = data_file("AK.pdb")
#: the folder of ContinuousFlex's 10 test particles (not shipped: given by
#: $DEEPHEMNMA_EXTRA_TEST_DATA, see deephemnma.data.testdata)
STACK_DIR = os.path.dirname(str(locate("continuousflex", "smallstack_img.stk")))


def main(out):
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch
    torch.set_num_threads(1)             # the stages run here, on 2 shared cores
    from deephemnma.scipion_env import setup
    setup(tempfile.mkdtemp(prefix="cflex_roundtrip_", dir=out), force=True)
    from pyworkflow.project import Manager
    from pyworkflow.plugin import Domain
    result = {"seconds": {}}
    t_all = time.perf_counter()

    prots = Domain.getProtocols()
    need = ["FlexProtAlignmentNMA", "FlexProtDimredNMA", "DeepHEMNMAProtNMA",
            "DeepHEMNMAProtAlign", "DeepHEMNMAProtTrain", "DeepHEMNMAProtLandscape"]
    missing = [n for n in need if n not in prots]
    assert not missing, f"protocols not registered: {missing}"
    result["continuousflex_protocols"] = sum(k.startswith("Flex") for k in prots)

    project = Manager().createProject("cflex_roundtrip")
    os.chdir(project.path)               # pyworkflow's run paths are relative to it

    def viewer(cls, obj):
        """A ProtocolViewer with its form defined, as the GUI opens it."""
        v = cls(project=project, protocol=obj)
        v.setProtocol(obj)
        return v

    def launch(prot, label):
        t0 = time.perf_counter()
        prot.setObjLabel(label)
        project.launchProtocol(prot, wait=True)
        prot = project.getProtocol(prot.getObjId())
        if not prot.isFinished():
            log = os.path.join(prot.getWorkingDir() or "", "logs", "run.stdout")
            tail = open(log).read()[-3000:] if os.path.exists(log) else ""
            raise AssertionError(f"{label} ({prot.getClassName()}) did not finish: "
                                 f"{prot.getErrorMessage()}\n{tail}")
        result["seconds"][label] = round(time.perf_counter() - t0, 1)
        return prot

    from pwem.protocols import ProtImportParticles, ProtImportPdb
    P = {k: prots[k] for k in need}

    # 1. our NMA in ContinuousFlex's layout
    imp = launch(project.newProtocol(ProtImportPdb, inputPdbData=1,
                                     pdbFile=AK), "import AK")
    nma = launch(project.newProtocol(P["DeepHEMNMAProtNMA"], inputStructure=imp.outputPdb,
                                     numberOfModes=10, **CPU1), "deephemnma NMA")
    modes = nma.outputModes
    run = nma._getPath()
    assert os.path.dirname(modes.getFileName()) == run
    assert os.path.isfile(os.path.join(run, "atoms.pdb"))
    assert modes[7].getModeFile() == os.path.join(run, "modes", "vec.7")
    result["modes"] = modes.getSize()

    from continuousflex.viewers.viewer_nma import FlexNMAViewer, createShiftPlot
    v = viewer(FlexNMAViewer, modes)
    v.modeNumber.set(7)
    plots = {"max_shifts": v._viewParam("displayMaxDistanceProfile")[0],
             "mode7_profile": v._viewSingleMode("displayDistanceProfile")[0]}
    for name, plotter in plots.items():
        png = os.path.join(out, f"cflex_nma_{name}.png")
        plotter.savefig(png)
        assert os.path.getsize(png) > 5000, png
    # the profile ContinuousFlex plots is |vec.7| per atom, read by xmippLib
    from pwem.emlib import MDL_NMA_ATOMSHIFT, MetaData
    md = MetaData(os.path.join(run, "extra", "distanceProfiles", "vec7.xmd"))
    shifts = np.array(md.getColumnValues(MDL_NMA_ATOMSHIFT))
    vec7 = np.loadtxt(modes[7].getModeFile())
    assert np.allclose(shifts, np.linalg.norm(vec7, axis=1), atol=1e-6)
    md = MetaData(os.path.join(run, "extra", "maxAtomShifts.xmd"))
    top = np.array(md.getColumnValues(MDL_NMA_ATOMSHIFT))
    per_mode = np.array([np.linalg.norm(np.loadtxt(modes[n].getModeFile()), axis=1)
                         for n in range(7, 11)])
    assert np.allclose(top, per_mode.max(0), atol=1e-6)
    del createShiftPlot

    # 2. our HEMNMA of ContinuousFlex's test particles -> its alignment protocol
    ip = launch(project.newProtocol(ProtImportParticles, importFrom=0,
                                    filesPath=STACK_DIR, filesPattern="smallstack_img.stk",
                                    samplingRate=1.0, magnification=60000, voltage=200,
                                    sphericalAberration=2.0, amplitudeContrast=0.1),
                "import particles")
    parts = ip.outputParticles
    assert parts.getSize() == 10
    # our HEMNMA stage, as the align protocol runs it (particles -> .xmd)
    from deephemnma.io.metadata import read_metadata, write_xmd
    from deephemnma.protocols.convert import matrix_from_geometry, particles_to_table
    from deephemnma.stages import align
    t0 = time.perf_counter()
    hemnma = os.path.join(out, "hemnma")
    os.makedirs(hemnma, exist_ok=True)
    write_xmd(os.path.join(hemnma, "input.xmd"), particles_to_table(parts))
    cfg = align.Config(particles=os.path.join(hemnma, "input.xmd"), modes=run,
                       structure=nma.outputReference.getFileName(), mode_list="7-8",
                       pixel_size=parts.getSamplingRate(), angular_step=20.0, coarse_iters=15,
                       fine_iters=10, n_candidates=2, outlier_threshold=0.0, use_ctf=False,
                       device="cpu",
                       out=os.path.join(hemnma, "aligned.xmd"))
    aligned = align.run(cfg, progress=False).particles
    result["seconds"]["deephemnma HEMNMA (stage)"] = round(time.perf_counter() - t0, 1)
    t = read_metadata(aligned)
    assert len(t) == 10
    ours = {int(i): q for i, q in zip(t["itemId"], t["nmaDisplacements"])}
    ours_cost = {int(i): c for i, c in zip(t["itemId"], t["cost"])}
    ours_matrix = {int(i): matrix_from_geometry(a, sh)
                   for i, a, sh in zip(t["itemId"], t.angles(), t.shifts())}

    cfa = launch(project.newProtocol(P["FlexProtAlignmentNMA"], inputModes=modes,
                                     inputParticles=parts, modeList="7-8",
                                     copyDeformations=aligned),
                 "ContinuousFlex nma alignment")
    cparts = cfa.outputParticles
    assert cparts.getSize() == 10
    # it copied our atoms.pdb and our mode selection
    assert os.path.isfile(cfa._getExtraPath("atoms.pdb"))
    md = MetaData(cfa._getExtraPath("modes.xmd"))
    from pwem.emlib import MDL_NMA_MODEFILE, MDL_ORDER
    assert md.getColumnValues(MDL_ORDER) == [7, 8]
    assert [os.path.basename(f) for f in md.getColumnValues(MDL_NMA_MODEFILE)] == \
        ["vec.7", "vec.8"]
    for p in cparts:
        i = p.getObjId()
        assert np.allclose([float(x) for x in p._xmipp_nmaDisplacements], ours[i], atol=1e-4)
        assert abs(float(p._xmipp_cost) - ours_cost[i]) < 1e-5
        # ContinuousFlex's matrix from our angles/shifts (Xmipp's conversion) is ours
        assert np.allclose(p.getTransform().getMatrix(), ours_matrix[i], atol=1e-4), i

    # 2b. the same from an EM map: our NMA of pseudoatoms -> its alignment,
    # which takes the modes' PDB (flagged pseudoatoms: Xmipp's format)
    from pwem.protocols import ProtImportVolumes
    from deephemnma.core.projector import atoms_to_volume
    from deephemnma.core.structure import read_structure
    from deephemnma.io.stacks import write_volume
    ak, _ = read_structure(AK).center()
    akmap = os.path.join(out, "ak_map.mrc")
    write_volume(akmap, atoms_to_volume(torch.tensor(ak.coords), torch.tensor(ak.weights), 40,
                                        2.0, 2.0).numpy(), 2.0)
    iv = launch(project.newProtocol(ProtImportVolumes, filesPath=akmap, samplingRate=2.0),
                "import AK map")
    pnma = launch(project.newProtocol(P["DeepHEMNMAProtNMA"], inputStructure=iv.outputVolume,
                                      numberOfModes=8, pseudoSigma=2.2, **CPU1),
                "deephemnma NMA of map")
    pmodes = pnma.outputModes
    assert pmodes.getPdb().getPseudoAtoms()
    t0 = time.perf_counter()
    paligned = align.run(cfg.replace(modes=pnma._getPath(), out=os.path.join(hemnma, "p.xmd"),
                                     structure=pnma.outputReference.getFileName()),
                         progress=False).particles
    result["seconds"]["deephemnma HEMNMA on pseudoatoms (stage)"] = round(
        time.perf_counter() - t0, 1)
    pt = read_metadata(paligned)
    pcfa = launch(project.newProtocol(P["FlexProtAlignmentNMA"], inputModes=pmodes,
                                      inputParticles=parts, modeList="7-8",
                                      copyDeformations=paligned),
                  "ContinuousFlex nma alignment (pseudoatoms)")
    copied = pcfa._getExtraPath("pseudoatoms.pdb")
    with open(copied) as f1, open(pmodes.getPdb().getFileName()) as f2:
        assert f1.read() == f2.read()
    pq = {p.getObjId(): [float(x) for x in p._xmipp_nmaDisplacements]
          for p in pcfa.outputParticles}
    assert np.allclose([pq[int(i)] for i in pt["itemId"]], pt["nmaDisplacements"], atol=1e-4)
    png = os.path.join(out, "cflex_nma_pseudoatoms_max_shifts.png")
    viewer(FlexNMAViewer, pmodes)._viewParam("displayMaxDistanceProfile")[0].savefig(png)
    result["pseudoatoms"] = len(read_structure(pnma.outputReference.getFileName()))

    # 3. its dimensionality reduction (scikit-learn PCA) on our amplitudes
    dim = launch(project.newProtocol(P["FlexProtDimredNMA"], inputNMA=cfa, dimredMethod=11,
                                     reducedDim=2), "ContinuousFlex nma dimred")
    Y = np.loadtxt(dim.getOutputMatrixFile())
    q = np.array([ours[i] for i in sorted(ours)])
    qc = q - q.mean(0)
    v1 = np.linalg.svd(qc, full_matrices=False)[2][0]
    assert Y.shape == (10, 2)
    assert np.allclose(np.abs(Y[:, 0]), np.abs(qc @ v1), rtol=1e-4, atol=1e-3)

    # 4. ContinuousFlex's particles -> our training and landscape
    tr = launch(project.newProtocol(P["DeepHEMNMAProtTrain"], inputParticles=cparts,
                                    inputModes=modes, epochs=2, batchSize=4, inputSize=32,
                                    **CPU1), "deephemnma train")
    assert tr.outputModel.getModeNumbers() == [7, 8]
    land = launch(project.newProtocol(P["DeepHEMNMAProtLandscape"], inputParticles=cparts,
                                      inputModes=modes, inputReference=nma.outputReference,
                                      grouping=2, expression="PC1 > 0", reconstruct=False,
                                      **CPU1), "deephemnma landscape")
    pcs = read_metadata(land._getExtraPath("landscape", "landscape.xmd"))
    pc1 = pcs["PC1"][np.argsort(pcs["itemId"])]
    # our PCA and ContinuousFlex's agree (up to sign)
    assert np.allclose(np.abs(pc1), np.abs(Y[:, 0]), rtol=1e-4, atol=1e-3)

    # 5. ContinuousFlex's viewers plot our results
    from continuousflex.viewers.viewer_nma_alignment import FlexAlignmentNMAViewer
    from continuousflex.viewers.viewer_nma_dimred import FlexDimredNMAViewer
    views = {"alignment_7_8": viewer(FlexAlignmentNMAViewer, cfa)._doViewRawDeformation("7 8"),
             "alignment_7": viewer(FlexAlignmentNMAViewer, cfa)._doViewRawDeformation("7"),
             "dimred_1_2": viewer(FlexDimredNMAViewer, dim)._doViewRawDeformation("1 2")}
    for name, vs in views.items():
        assert len(vs) == 1 and hasattr(vs[0], "savefig"), (name, vs)
        png = os.path.join(out, f"cflex_{name}.png")
        vs[0].savefig(png)
        assert os.path.getsize(png) > 5000, png
    data = viewer(FlexAlignmentNMAViewer, cfa).loadData()
    assert data.getSize() == 10

    result["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    result["pngs"] = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
