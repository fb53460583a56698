"""What the viewers share."""


class Shower:
    """A matplotlib figure as a Scipion viewer result (``show()``)."""

    def __init__(self, fig):
        self.fig = fig

    def show(self):
        import matplotlib.pyplot as plt
        plt.show()
