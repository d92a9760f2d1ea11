"""``cupy.cuda.compiler`` of the stand-in: the exception CuPy raises when NVRTC fails."""


class CompileException(Exception):
    def __init__(self, msg, source="", name="", options=(), backend="nvrtc"):
        super().__init__(msg)
        self.source, self.name, self.options = source, name, options
