"""File formats: stacks (.mrcs, .stk), metadata (.xmd, .star), model files."""
