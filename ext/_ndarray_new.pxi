# numpy's array constructor for the modules that make arrays over memory they
# do not own (_framing, _shmpath): declared here because numpy's Cython
# declarations leave it commented out. The including module cimports numpy
# as cnp, and PyObject and PyTypeObject.
cdef extern from "numpy/arrayobject.h":
    object PyArray_NewFromDescr(PyTypeObject *subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp *dims, cnp.npy_intp *strides,
                                void *data, int flags, PyObject *obj)
