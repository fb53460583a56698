"""File formats: image stacks and volumes (.mrcs, .mrc, .stk) and particle metadata (.xmd, .star). Model files are in deephemnma.core.models."""
