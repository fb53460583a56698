"""Files shipped with the package (their sources and licences: README.md here).

``data_file("AK.pdb")`` is adenylate kinase chain A (PDB 4AKE, 1656 heavy
atoms), the structure of ``make demo`` and of the README's examples.
"""
import os

#: this folder (deephemnma/data, installed as package data)
HERE = os.path.dirname(os.path.abspath(__file__))


def data_file(name):
    """Absolute path of a file shipped in deephemnma/data; FileNotFoundError
    when the package has no such file."""
    path = os.path.join(HERE, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"deephemnma has no data file {name!r} (in {HERE})")
    return path
