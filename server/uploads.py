"""An upload, read safely: the multipart/form-data body is streamed to a file of a private
temporary folder under a generated name (never the client's), its bytes counted as they
come, so an upload over the limit is refused (413) having read no more than the limit.
receive() removes the file when it fails; once it returns, the caller owns the Upload
(`with upload:` removes the file whatever happens next).  The folder's name
holds the server's pid and start time, so the next server removes the folder of one that
was killed (SIGKILL, OOM) before it could."""
import glob
import os
import re
import secrets
import shutil
import tempfile

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from reader.inputs import VIDEO_EXTENSIONS

FIELD_BYTES = 256        # a form field (topk, window_seconds, ...) is a short number
MAX_PARTS = 16
OVERHEAD = 64 * 1024     # boundaries and part headers around the file, at most


FOLDER_PREFIX = 'tsm-serve-'
FOLDER_NAME = re.compile(FOLDER_PREFIX + r'(\d+)-(\d+)-')  # pid, start time (clock ticks)


def _start_ticks(pid):
    """A process's start time (clock ticks after boot, /proc/PID/stat field 22), or None
    when it is gone: with the pid, it names one process (pids are reused)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def private_folder():
    """A new folder for this server's uploads (mode 0700: this user only), after removing
    those of servers that are no longer running."""
    root = tempfile.gettempdir()
    for path in glob.glob(os.path.join(root, FOLDER_PREFIX + '*')):
        m = FOLDER_NAME.match(os.path.basename(path))
        try:
            mine = os.lstat(path).st_uid == os.getuid()
        except OSError:
            continue
        if m and mine and _start_ticks(int(m.group(1))) != int(m.group(2)):
            shutil.rmtree(path, ignore_errors=True)
    pid = os.getpid()
    return tempfile.mkdtemp(prefix=f'{FOLDER_PREFIX}{pid}-{_start_ticks(pid)}-', dir=root)


class UploadError(Exception):
    """A request the server refuses; `status` is its HTTP status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Upload:
    """The file part (`path`, `filename` as the client named it, `size`) and the other
    form fields ({name: text})."""

    def __init__(self):
        self.path, self.filename, self.size, self.fields = None, None, 0, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


def private_name(folder, client_name):
    """A fresh random path in `folder`; the extension only from the known video ones."""
    ext = os.path.splitext(client_name or '')[1].lower()
    return os.path.join(folder, secrets.token_hex(16) + (ext if ext in VIDEO_EXTENSIONS else ''))


class _Parts:
    """python-multipart callbacks: the part named `file_field` goes to a new file, the
    others (short) to memory."""

    def __init__(self, upload, folder, max_bytes, file_field):
        self.upload, self.folder, self.max_bytes, self.file_field = upload, folder, max_bytes, file_field
        self.header_field, self.header_value, self.headers = b'', b'', {}
        self.name, self.fd, self.value, self.parts = None, None, None, 0

    def callbacks(self):
        return {'on_part_begin': self.begin, 'on_header_field': self.field_chunk,
                'on_header_value': self.value_chunk, 'on_header_end': self.header_end,
                'on_headers_finished': self.headers_done, 'on_part_data': self.data,
                'on_part_end': self.end}

    def begin(self):
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(400, f"more than {MAX_PARTS} form fields")
        self.headers, self.name = {}, None

    def field_chunk(self, data, start, end):
        self.header_field += data[start:end]

    def value_chunk(self, data, start, end):
        self.header_value += data[start:end]

    def header_end(self):
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b'', b''

    def headers_done(self):
        _, params = parse_options_header(self.headers.get(b'content-disposition', b''))
        self.name = params.get(b'name', b'').decode('utf-8', 'replace')
        if self.name == self.file_field:
            if self.upload.path is not None:
                raise UploadError(400, f"more than one '{self.file_field}' file")
            filename = params.get(b'filename', b'').decode('utf-8', 'replace')
            self.upload.filename = os.path.basename(filename.replace('\\', '/'))[:255] or 'upload'
            self.upload.path = private_name(self.folder, filename)
            self.fd = os.open(self.upload.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            self.value = b''

    def data(self, data, start, end):
        if self.fd is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise UploadError(413, f"the video is over the limit of {self.max_bytes} bytes")
            os.write(self.fd, data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > FIELD_BYTES:
                raise UploadError(400, f"form field '{self.name}' is over {FIELD_BYTES} bytes")

    def end(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        elif self.name:
            self.upload.fields[self.name] = self.value.decode('utf-8', 'replace')

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def receive(request, folder, max_bytes, file_field='video'):
    """Stream the body of `request` into an Upload; raise UploadError (its file removed)."""
    ctype, params = parse_options_header(request.headers.get('content-type', ''))
    if ctype != b'multipart/form-data' or not params.get(b'boundary'):
        raise UploadError(415, f"send multipart/form-data with the video in a "
                               f"'{file_field}' file field")
    limit = max_bytes + OVERHEAD
    declared = request.headers.get('content-length')
    if declared is not None:
        if not declared.isdigit():
            raise UploadError(400, "bad Content-Length")
        if int(declared) > limit:  # refused before reading any of it
            raise UploadError(413, f"the upload ({declared} bytes) is over the limit of "
                                   f"{max_bytes} bytes")
    upload = Upload()
    parts = _Parts(upload, folder, max_bytes, file_field)
    parser = MultipartParser(params[b'boundary'], parts.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise UploadError(413, f"the upload is over the limit of {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
        if upload.path is None:
            raise UploadError(422, f"no '{file_field}' file in the form")
        if parts.fd is not None:
            raise UploadError(400, "the multipart body ended inside the video")
    except MultipartParseError as e:
        upload.remove()
        raise UploadError(400, f"malformed multipart body ({e})") from None
    except ClientDisconnect:
        upload.remove()
        raise UploadError(400, "the client went away during the upload") from None
    except BaseException:
        upload.remove()
        raise
    finally:
        parts.close()
    return upload
