"""Schedule every protocol of a Scipion project once, each waiting for its
inputs (what pyworkflow's ``pyworkflow.project.scripts.schedule`` does for a
workflow with one import at its top):

    scipion3 python -m deephemnma.scipion_schedule PROJECT_NAME

A workflow with several imports at its top (particles and a structure, as
the real-data template has) has protocols downstream of more than one of
them; pyworkflow's script schedules such a protocol once per import above
it, and its runs then start twice. Here each protocol is scheduled once,
after a delay growing with its depth in the workflow (as pyworkflow's).
"""
import sys


def depths(project):
    """{protocol id: depth} of the project's runs: 0 for those without
    inputs, else one more than the deepest run they take inputs from."""
    graph = project.getRunsGraph()
    out = {}

    def depth(node):
        key = node.getName()
        if key not in out:
            parents = [p for p in node.getParents() if not p.isRoot()]
            out[key] = 1 + max(map(depth, parents)) if parents else 0
        return out[key]

    for node in graph.getNodes():
        if not node.isRoot():
            depth(node)
    return {int(k): v for k, v in out.items()}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: scipion3 python -m deephemnma.scipion_schedule PROJECT_NAME",
              file=sys.stderr)
        return 2
    from pyworkflow.project import Manager
    from pyworkflow.protocol import INITIAL_SLEEP_TIME
    manager = Manager()
    if not manager.hasProject(argv[0]):
        print(f"there is no Scipion project named {argv[0]}", file=sys.stderr)
        return 2
    project = manager.loadProject(argv[0])
    levels = depths(project)
    for prot in sorted(project.getRuns(refresh=True), key=lambda p: levels[p.getObjId()]):
        if prot.isSaved():
            project.scheduleProtocol(prot, initialSleepTime=levels[prot.getObjId()]
                                     * INITIAL_SLEEP_TIME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
