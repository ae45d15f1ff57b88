# Included by _framing.pyx (see _packer.pxi): the reading half. decode()
# of a small header of common values with a msgpack reader of its own
# (_get), the frame references of a received header (_ExtResolver: buffers
# and arrays over their frames), and the scan that checks a large header's
# limits before msgpack builds anything. Uses the imports and module state
# of _framing.pyx.


# Received dtypes the shared path has checked, by their wire string:
# np.dtype(str) parses the string on every call. Bounded: a peer sending
# ever new dtype strings must not grow it.
cdef dict _dtypes = {}
cdef Py_ssize_t _MAX_CACHED_DTYPES = 64


cdef inline Py_ssize_t _read_uint(const unsigned char *p, Py_ssize_t n,
                                  Py_ssize_t *pos) noexcept:
    """A msgpack unsigned int of up to 32 bits at pos (advanced), or -1."""
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char tag
    if i >= n:
        return -1
    tag = p[i]
    if tag <= 0x7F:
        pos[0] = i + 1
        return tag
    if tag == 0xCC and i + 1 < n:
        pos[0] = i + 2
        return p[i + 1]
    if tag == 0xCD and i + 2 < n:
        pos[0] = i + 3
        return (p[i + 1] << 8) | p[i + 2]
    if tag == 0xCE and i + 4 < n:
        pos[0] = i + 5
        return ((<Py_ssize_t>p[i + 1] << 24) | (p[i + 2] << 16)
                | (p[i + 3] << 8) | p[i + 4])
    return -1


cdef object _take_frame(object frames, Py_ssize_t index, set used):
    """Read-only memoryview of frame ``index``, marked used; None when the
    shared path must judge the reference (out of range or used twice)."""
    if index < 1 or index >= len(frames) or index in used:
        return None
    used.add(index)
    return PyMemoryView_FromObject(frames[index]).toreadonly()


cdef object _array_ext(const unsigned char *p, Py_ssize_t n, object frames,
                       set used):
    """EXT_ARRAY ``[frame, dtype, shape]`` (its payload, p[:n]) in its usual
    form, as a read-only array over the frame (no copy); None otherwise."""
    cdef Py_ssize_t pos = 1, index, length, ndim, i
    cdef Py_ssize_t count = 1, dim
    cdef cnp.npy_intp dims[_FAST_NDIM]
    cdef cnp.dtype dtype
    if n < 1 or p[0] != 0x93:  # fixarray of 3
        return None
    index = _read_uint(p, n, &pos)
    if index < 0 or pos >= n or not 0xA0 <= p[pos] <= 0xBF:  # fixstr dtype
        return None
    length = p[pos] & 0x1F
    if pos + 1 + length >= n:
        return None
    cached = _dtypes.get(PyBytes_FromStringAndSize(<char *>p + pos + 1, length))
    if cached is None:  # first sight: the shared path checks it
        return None
    dtype = <cnp.dtype>cached
    pos += 1 + length
    if not 0x90 <= p[pos] <= 0x90 + _FAST_NDIM:  # fixarray shape
        return None
    ndim = p[pos] & 0x0F
    pos += 1
    for i in range(ndim):
        dim = _read_uint(p, n, &pos)
        if dim < 0 or (dim != 0 and count > (<Py_ssize_t>(SIZE_MAX >> 1)) // dim):
            return None
        dims[i] = dim
        count *= dim
    if pos != n or index < 1 or index >= len(frames) or index in used:
        return None
    view = PyMemoryView_FromObject(frames[index])
    # in bytes, not items, and contiguous: as the shared path checks
    if (not view.c_contiguous
            or dtype.itemsize and count > (<Py_ssize_t>(SIZE_MAX >> 1)) // dtype.itemsize
            or count * dtype.itemsize != view.nbytes):
        return None
    used.add(index)
    view = view.toreadonly()
    cnp.Py_INCREF(dtype)  # PyArray_NewFromDescr steals it
    arr = PyArray_NewFromDescr(
        _ndarray_type, dtype, <int>ndim, dims, NULL,
        PyMemoryView_GET_BUFFER(view).buf, 0, NULL)  # flags 0: read-only
    cnp.Py_INCREF(view)  # PyArray_SetBaseObject steals it: the view keeps
    cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, view)  # the frame alive
    return arr


cdef _remember_dtype(bytes data, object arr):
    if len(_dtypes) >= _MAX_CACHED_DTYPES:
        return
    spec = _unpackb(data)
    # Only a string that names the array's own dtype: "(2,)<i4" decodes to
    # int32 arrays with one more dimension, and must not read as int32.
    if _np_dtype(spec[1]) == arr.dtype:
        _dtypes[(<str>spec[1]).encode()] = arr.dtype


cdef class _ExtResolver:
    """The ext_hook of one decode: resolves references into its frames."""

    cdef object frames
    cdef set used

    def __init__(self, frames):
        self.frames = frames
        self.used = set()

    def __call__(self, int code, bytes data):
        cdef const unsigned char *p
        if code == EXT_ARRAY:
            arr = _array_ext(<const unsigned char *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data), self.frames, self.used)
            if arr is None:
                arr = _resolve_ext(code, data, self.frames, self.used)
                _remember_dtype(data, arr)
            return arr
        if code == EXT_BUFFER and PyBytes_GET_SIZE(data) == 1:
            p = <const unsigned char *>PyBytes_AS_STRING(data)
            if p[0] <= 0x7F:  # a positive fixint: the frame index
                view = _take_frame(self.frames, p[0], self.used)
                if view is not None:
                    return view
        return _resolve_ext(code, data, self.frames, self.used)


# -- small headers, read without msgpack ----------------------------------
# The reading twin of _put: _get reads the common msgpack values into the
# objects msgpack.unpackb would build; anything else (and an unusual frame
# reference, bad UTF-8, trailing bytes...) sends decode to the general
# path, which then gives the result or the error. Every read is checked
# against the end of the header first.
cdef object _NOT_SMALL = object()  # _get's "take the general path"
cdef Py_ssize_t _SMALL_READ = 64 * 1024  # larger headers: msgpack at once


cdef inline unsigned long long _get_be(const unsigned char *p, int size) noexcept:
    cdef unsigned long long value = 0
    cdef int i
    for i in range(size):
        value = (value << 8) | p[i]
    return value


cdef enum _Sized:
    _STR, _BIN, _EXT, _ARRAY, _MAP


cdef object _get(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                 object frames, set used, int depth):
    cdef Py_ssize_t at = pos[0], size = 0
    cdef unsigned char tag
    cdef int width = 0, code
    cdef _Sized kind
    cdef unsigned long long bits
    cdef uint32_t bits32
    cdef float single
    cdef double double_value
    if at >= n or depth > _MAX_DEPTH:
        return _NOT_SMALL
    tag = p[at]
    at += 1
    # values without a size
    if tag <= 0x7F or tag >= 0xE0:  # positive and negative fixint
        pos[0] = at
        return <long><signed char>tag if tag >= 0xE0 else <long>tag
    if tag == 0xC0:
        pos[0] = at
        return None
    if tag == 0xC2 or tag == 0xC3:
        pos[0] = at
        return tag == 0xC3
    if tag == 0xCA or tag == 0xCB:  # float 32, 64
        width = 4 if tag == 0xCA else 8
        if width > n - at:
            return _NOT_SMALL
        bits = _get_be(p + at, width)
        pos[0] = at + width
        if width == 4:
            bits32 = <uint32_t>bits
            memcpy(&single, &bits32, 4)
            return <double>single
        memcpy(&double_value, &bits, 8)
        return double_value
    if 0xCC <= tag <= 0xD3:  # uint, then int, of 1, 2, 4, 8 bytes
        width = 1 << ((tag - 0xCC) & 3)
        if width > n - at:
            return _NOT_SMALL
        bits = _get_be(p + at, width)
        pos[0] = at + width
        if tag <= 0xCF:
            return bits
        if width == 1:
            return <long><signed char>bits
        if width == 2:
            return <long><short>bits
        if width == 4:
            return <long><int>bits
        return <long long>bits
    # sized values: the size in the tag, or in the next 1, 2 or 4 bytes
    if tag <= 0x8F:
        kind, size = _MAP, tag & 0x0F
    elif tag <= 0x9F:
        kind, size = _ARRAY, tag & 0x0F
    elif tag <= 0xBF:
        kind, size = _STR, tag & 0x1F
    elif 0xD4 <= tag <= 0xD8:  # fixext 1, 2, 4, 8, 16
        kind, size = _EXT, 1 << (tag - 0xD4)
    else:
        if 0xC4 <= tag <= 0xC6:
            kind, width = _BIN, 1 << (tag - 0xC4)
        elif 0xC7 <= tag <= 0xC9:
            kind, width = _EXT, 1 << (tag - 0xC7)
        elif 0xD9 <= tag <= 0xDB:
            kind, width = _STR, 1 << (tag - 0xD9)
        elif tag == 0xDC or tag == 0xDD:
            kind, width = _ARRAY, 2 if tag == 0xDC else 4
        elif tag == 0xDE or tag == 0xDF:
            kind, width = _MAP, 2 if tag == 0xDE else 4
        else:  # 0xC1: never used
            return _NOT_SMALL
        if width > n - at:
            return _NOT_SMALL
        size = <Py_ssize_t>_get_be(p + at, width)
        at += width
    if kind == _STR:
        if size > n - at:
            return _NOT_SMALL
        pos[0] = at + size
        return PyUnicode_DecodeUTF8(<const char *>p + at, size, NULL)  # bad: raises
    if kind == _BIN:
        if size > n - at:
            return _NOT_SMALL
        pos[0] = at + size
        return PyBytes_FromStringAndSize(<const char *>p + at, size)
    if kind == _EXT:  # a type byte, then the payload: a frame reference
        if size >= n - at:
            return _NOT_SMALL
        code = <signed char>p[at]
        at += 1
        pos[0] = at + size
        if code == EXT_ARRAY:
            value = _array_ext(p + at, size, frames, used)
        elif code == EXT_BUFFER and size == 1 and p[at] <= 0x7F:
            value = _take_frame(frames, p[at], used)
        else:
            value = None
        return _NOT_SMALL if value is None else value
    pos[0] = at
    if kind == _ARRAY:
        return _get_array(p, n, pos, size, frames, used, depth)
    return _get_map(p, n, pos, size, frames, used, depth)


cdef object _get_array(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                       Py_ssize_t count, object frames, set used, int depth):
    cdef Py_ssize_t i
    cdef list items
    if count > n - pos[0]:  # an item takes a byte at least
        return _NOT_SMALL
    items = PyList_New(count)  # a slot left empty is fine to free
    for i in range(count):
        item = _get(p, n, pos, frames, used, depth + 1)
        if item is _NOT_SMALL:
            return _NOT_SMALL
        Py_INCREF(item)
        PyList_SET_ITEM(items, i, item)
    return items


cdef object _get_map(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos,
                     Py_ssize_t count, object frames, set used, int depth):
    cdef Py_ssize_t i
    cdef dict mapping = {}
    if count > (n - pos[0]) // 2:  # a key and a value take two bytes at least
        return _NOT_SMALL
    for i in range(count):
        key = _get(p, n, pos, frames, used, depth + 1)
        if type(key) is not str and type(key) is not int:
            return _NOT_SMALL  # other keys: the general path
        item = _get(p, n, pos, frames, used, depth + 1)
        if item is _NOT_SMALL:
            return _NOT_SMALL
        PyDict_SetItem(mapping, key, item)
    return mapping


cdef object _decode_small(object head, object frames, Py_ssize_t max_header):
    """decode() of a small header of common values; None otherwise."""
    cdef Py_buffer view
    cdef Py_ssize_t pos = 0
    cdef set used = set()
    # C-contiguous, with its item size: msgpack refuses multi-byte items
    PyObject_GetBuffer(head, &view, PyBUF_ND | PyBUF_FORMAT)
    try:
        if view.itemsize != 1 or view.len > max_header or view.len > _SMALL_READ:
            return None
        header = _get(<const unsigned char *>view.buf, view.len, &pos, frames,
                      used, 0)
        if (type(header) is dict and pos == view.len
                and len(used) == len(frames) - 1):
            return header
        return None
    finally:
        PyBuffer_Release(&view)


# -- limits of a large header, checked before msgpack builds anything ------
# A linear walk over the msgpack bytes that counts objects and measures
# nesting without creating any: msgpack.unpackb would build one Python
# object per byte of a header of empty lists (70 bytes of memory each).
cdef Py_ssize_t _scan_above = SCAN_ABOVE
cdef Py_ssize_t _ext_cost = EXT_COST
cdef enum:
    _SCAN_STACK = 1024  # msgpack's own nesting limit: deeper fails there


cdef int _scan(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_objects,
               Py_ssize_t max_depth) except -1:
    """Raise MessageTooLargeError if the header at p[:n] holds more than
    ``max_objects`` objects or nests deeper than ``max_depth``, with the
    pure engine's counts (bounded_unpackb); 0 otherwise. A malformed header
    ends the scan: msgpack then says what is wrong."""
    cdef Py_ssize_t left[_SCAN_STACK + 1]  # items still due per open container
    cdef Py_ssize_t pos = 0, objects = 0, size, items, width
    cdef Py_ssize_t depth = 0
    cdef unsigned char tag
    while pos < n:
        tag = p[pos]
        pos += 1
        items = -1  # not a container
        size = 0  # bytes of payload to skip
        if tag <= 0x7F or tag >= 0xE0 or 0xC0 <= tag <= 0xC3:
            pass  # fixint, nil, bool (0xC1 fails in msgpack)
        elif tag <= 0x8F:
            items = 2 * (tag & 0x0F)
        elif tag <= 0x9F:
            items = tag & 0x0F
        elif tag <= 0xBF:
            size = tag & 0x1F
        elif tag == 0xCA or tag == 0xCB:
            size = 4 if tag == 0xCA else 8
        elif 0xCC <= tag <= 0xD3:
            size = 1 << ((tag - 0xCC) & 3)
        elif 0xD4 <= tag <= 0xD8:  # fixext: a type byte and the payload
            objects += _ext_cost - 1
            size = 1 + (1 << (tag - 0xD4))
        else:
            if 0xC4 <= tag <= 0xC6:  # bin 8, 16, 32
                width = 1 << (tag - 0xC4)
            elif 0xC7 <= tag <= 0xC9:  # ext 8, 16, 32
                width = 1 << (tag - 0xC7)
                objects += _ext_cost - 1
            elif 0xD9 <= tag <= 0xDB:  # str 8, 16, 32
                width = 1 << (tag - 0xD9)
            else:  # array 16, 32 (0xDC, 0xDD), map 16, 32 (0xDE, 0xDF)
                width = 2 if tag == 0xDC or tag == 0xDE else 4
            if width > n - pos:
                return 0
            size = <Py_ssize_t>_get_be(p + pos, <int>width)
            pos += width
            if tag >= 0xDC:
                items = size if tag <= 0xDD else 2 * size
                size = 0
            elif 0xC7 <= tag <= 0xC9:
                size += 1  # the type byte
        objects += 1
        if objects > max_objects:
            raise too_many_objects(max_objects)
        if items >= 0:  # a container, at depth + 1
            if depth + 1 > max_depth:
                raise too_deep(max_depth)
            if items > max_objects - objects:  # declared: refused at once
                raise too_many_objects(max_objects)
            if items > 0:
                if depth >= _SCAN_STACK:
                    return 0  # msgpack refuses this nesting itself
                depth += 1
                left[depth] = items
                continue
        else:
            if size > n - pos:
                return 0
            pos += size
        # a value is complete: close every container it completes
        while depth > 0:
            left[depth] -= 1
            if left[depth] > 0:
                break
            depth -= 1
        if depth == 0:
            return 0  # the header is read (trailing bytes: msgpack says so)
    return 0


cdef int _scan_header(object head, Py_ssize_t max_objects,
                      Py_ssize_t max_depth) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(head, &view, PyBUF_SIMPLE)
    try:
        _scan(<const unsigned char *>view.buf, view.len, max_objects, max_depth)
    finally:
        PyBuffer_Release(&view)
    return 0
