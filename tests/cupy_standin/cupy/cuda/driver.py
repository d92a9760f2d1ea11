"""``cupy.cuda.driver`` of the stand-in: the error a refused kernel launch raises."""


class CUDADriverError(RuntimeError):
    pass
