"""What the viewers share."""
import dataclasses
import os


class Shower:
    """A matplotlib figure as a Scipion viewer result (``show()``)."""

    def __init__(self, fig):
        self.fig = fig

    def show(self):
        import matplotlib.pyplot as plt
        plt.show()


@dataclasses.dataclass
class AccuracyFiles:
    """The files the accuracy viewer writes in a protocol's extra folder."""
    folder: str

    @property
    def png(self):
        """Estimated vs true amplitudes per mode, angular and shift errors."""
        return os.path.join(self.folder, "accuracy.png")

    @property
    def json(self):
        """The results of :func:`deephemnma.core.metrics.evaluate`."""
        return os.path.join(self.folder, "accuracy.json")

    @property
    def table(self):
        """The same results as a Markdown table."""
        return os.path.join(self.folder, "accuracy.md")
