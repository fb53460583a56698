"""deephemnma: DeepHEMNMA as a Scipion plugin and a command-line tool."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.abspath(os.path.dirname(__file__))


def _requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        return [line.split("#")[0].strip() for line in f
                if line.split("#")[0].strip()]


def _version():
    with open(os.path.join(HERE, "deephemnma", "version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="scipion-em-deephemnma",
    version=_version(),
    description="DeepHEMNMA: continuous conformational landscapes of macromolecules "
                "from cryo-EM particle images (normal modes + deep learning)",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="GPLv3",
    python_requires=">=3.8",
    packages=find_packages(include=["deephemnma", "deephemnma.*"]),
    include_package_data=True,
    package_data={"deephemnma": ["protocols.conf", "deephemnma_logo.png", "templates/*.json.template",
                                 "data/*"]},
    install_requires=_requirements(),
    extras_require={"test": ["pytest>=7", "scipion-app>=3.8", "pyflakes>=3"]},
    entry_points={
        "pyworkflow.plugin": ["deephemnma = deephemnma"],
        "console_scripts": ["deephemnma = deephemnma.cli:main"],
    },
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v3 (GPLv3)",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
