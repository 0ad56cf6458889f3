"""Generated videos for tests and benchmarks (no network, no ../shared)."""
import subprocess

import numpy as np


def frame_pattern(index, height=48, width=64):
    """A frame whose pixels encode its index, so a decoded frame names itself."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame[:4, :4] = index  # a solid corner block with the index as value
    return frame


def make_clip(n, height=48, width=64):
    return np.stack([frame_pattern(i, height, width) for i in range(n)])


def write_video(path, frames, fps=25, fourcc='FFV1'):
    """uint8 RGB [T, H, W, 3] -> a lossless FFV1 .avi/.mkv through OpenCV's bundled ffmpeg."""
    import cv2
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def write_mp4(path, frames, fps=25, extra=('-movflags', '+faststart')):
    """uint8 RGB [T, H, W, 3] -> lossless H.264 (libx264rgb, qp 0) .mp4 through the ffmpeg
    binary that imageio-ffmpeg ships (no system ffmpeg needed)."""
    import imageio_ffmpeg
    h, w = frames.shape[1:3]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f', 'rawvideo',
           '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(fps), '-i', '-',
           '-c:v', 'libx264rgb', '-qp', '0', '-g', '5', *extra, str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)
    return str(path)
