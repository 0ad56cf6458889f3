"""The README's picture of the served page: the demo-trained TSM (bash run.sh demo) serving a
video made of held-out demo clips of several classes, one after another, predicted in
windows of one clip each, as headless Chromium shows it.

    python -m testing.serve_screenshot --weights output/demo/tsm/TSM.pdparams \
        --data output/demo/data --out docs/serve_page.png
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

from data.demo_dataset import DEFAULT_FPS, read_video
from testing.browser import chromium, chromium_driver
from testing.served import Served

SCALE = 8  # 32 px demo frames shown at 256 px (nearest: the server scales them back)


def long_video(data, path, order=(0, 2, 4, 6, 1, 3, 5, 7)):
    """The first held-out clip of each class in `order`, end to end, as VP9 (which every
    Chromium plays); -> (path, seconds per clip)."""
    rows = [ln.rsplit(None, 1) for ln in open(os.path.join(data, 'val.list')) if ln.strip()]
    first = {}
    for video, label in rows:
        first.setdefault(int(label), video)
    frames = np.concatenate([read_video(first[c]) for c in order])
    frames = frames.repeat(SCALE, axis=1).repeat(SCALE, axis=2)  # [T, H, W, 3] -> [T, 8H, 8W, 3]
    import imageio_ffmpeg
    h, w = frames.shape[1:3]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f', 'rawvideo',
                    '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(DEFAULT_FPS), '-i', '-',
                    '-c:v', 'libvpx-vp9', '-b:v', '0', '-crf', '15', '-pix_fmt', 'yuv420p', path],
                   input=np.ascontiguousarray(frames).tobytes(), check=True)
    return path, len(read_video(first[order[0]])) / DEFAULT_FPS


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='configs/tsm_demo.yaml')
    p.add_argument('--weights', required=True)
    p.add_argument('--data', required=True, help="the demo's data folder (val.list, label_list.txt)")
    p.add_argument('--out', default='docs/serve_page.png')
    args = p.parse_args(argv)
    if chromium() is None:
        sys.exit('error: needs chromium and chromium-driver (apt-get install chromium chromium-driver)')
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    with tempfile.TemporaryDirectory() as tmp:
        video, seconds = long_video(args.data, os.path.join(tmp, 'demo_clips.webm'))
        labels = os.path.join(os.path.abspath(args.data), 'label_list.txt')
        with Served(['--config', args.config, '--weights', args.weights, '--precision', 'fp32',
                     '-o', f'INFER.kinetics_labels={labels}']).wait() as server:
            d = chromium_driver(size=(1000, 1130))
            try:
                d.get(server.url + '/')
                WebDriverWait(d, 30).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
                d.find_element(By.ID, 'window').send_keys(f'{seconds:.4f}')
                d.find_element(By.ID, 'file').send_keys(video)
                WebDriverWait(d, 120).until(
                    lambda d: len(d.find_elements(By.CSS_SELECTOR, '#timeline div')) > 1)
                d.find_elements(By.CSS_SELECTOR, '#timeline div')[2].click()  # a window, and its frame
                d.execute_script("document.getElementById('player').currentTime = arguments[0]",
                                 2.5 * seconds)
                WebDriverWait(d, 10).until(lambda d: d.execute_script(
                    "const v = document.getElementById('player'); return !v.seeking && v.readyState >= 2"))
                d.find_element(By.ID, 'online-label')  # the page is all there
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                d.save_screenshot(args.out)
            finally:
                d.quit()
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
