"""The page in a real browser: headless Debian Chromium (apt: chromium, chromium-driver)
driven by Selenium against a real server.  It uploads generated clips and reads what
the page shows; the camera path runs on Chromium's fake camera."""
import numpy as np
import pytest

from testing.browser import CHROMIUM_HINT, chromium, chromium_driver
from testing.media import make_clip, write_mp4
from tests.test_server import eager_probs, files, http, metric, start  # noqa: F401 (fixture)

if chromium() is None:
    pytest.skip(CHROMIUM_HINT, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NAMES = ['red', 'green', 'blue']


@pytest.fixture(scope='module')
def url(files):  # noqa: F811
    s = start(files, 'browser')
    try:
        yield s.wait().url
    finally:
        s.stop()


@pytest.fixture
def page(url):
    d = chromium_driver()
    try:
        d.get(url + '/')
        WebDriverWait(d, 30).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
        yield d
    finally:
        d.quit()


def upload(d, path):
    d.find_element(By.ID, 'file').send_keys(str(path))
    WebDriverWait(d, 120).until(lambda d: d.find_element(By.ID, 'top1').text
                                or 'error' in d.find_element(By.ID, 'status').get_attribute('class'))
    assert d.find_element(By.ID, 'status').get_attribute('class') != 'error', \
        d.find_element(By.ID, 'status').text


def test_upload_shows_top1_bars_and_sampled_frames(files, page, tmp_path):  # noqa: F811
    upload(page, files['clip'])
    expected = eager_probs(files, files['clip'])
    assert page.find_element(By.ID, 'top1').text == NAMES[int(np.argmax(expected))]
    bars = page.find_elements(By.CSS_SELECTOR, '#bars .bar')
    assert [b.find_element(By.CLASS_NAME, 'name').text for b in bars] == \
        [NAMES[i] for i in np.argsort(-expected)]
    shown = [float(b.find_element(By.CLASS_NAME, 'value').text) for b in bars]
    np.testing.assert_allclose(shown, np.sort(expected)[::-1], atol=1e-3)
    decoded = page.execute_script(
        "return [...document.querySelectorAll('#frames img')].map(i => i.complete && i.naturalWidth)")
    assert decoded == [96] * 4  # the 4 segments' frames, as JPEG thumbnails the browser decoded
    assert page.find_element(By.ID, 'timeline-box').get_attribute('hidden')  # one clip, no timeline
    assert 'decode' in page.find_element(By.ID, 'timings').text
    shot = tmp_path / 'page.png'
    assert page.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_long_video_gets_a_timeline_of_windows(page, tmp_path):
    # 21 s at 5 fps: the page asks for windows of round(21 / 12) = 2 s, so 0-2, ..., 18-20,
    # and 20-21 (the last second is over half a window: kept as a window of its own)
    path = write_mp4(tmp_path / 'long.mp4', make_clip(105, 48, 64), fps=5)
    upload(page, path)
    WebDriverWait(page, 60).until(lambda d: not d.find_element(By.ID, 'timeline-box')
                                  .get_attribute('hidden'))
    segments = page.find_elements(By.CSS_SELECTOR, '#timeline div')
    assert len(segments) == 11
    assert segments[-1].get_attribute('title').startswith('00:20–00:21 ')
    colours = {s.value_of_css_property('background-color') for s in segments}
    legend = page.find_elements(By.CSS_SELECTOR, '#legend span')
    assert len(colours) == len(legend) and {e.text for e in legend} <= set(NAMES)
    segments[3].click()
    assert page.find_element(By.ID, 'window-label').text.startswith('window 4 of 11: 00:06–00:08')


def test_camera_online_over_the_websocket(url):
    """The camera mode answers from the exported online model (the server's engine, not
    eager Paddle), and the page shows answers per second and ms per frame."""
    online = http().get(url + '/v1/model').json()['online']
    assert online['engine'] == {'engine': 'openvino', 'precision': 'fp32'}  # auto, --precision
    before = metric(url, 'tsm_online_frames_total')
    d = chromium_driver(fake_camera=True)
    try:
        d.get(url + '/')
        WebDriverWait(d, 30).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
        assert 'shift_direction: backward' in d.find_element(By.CSS_SELECTOR, '.note').text
        d.find_element(By.ID, 'cam-start').click()
        WebDriverWait(d, 60).until(lambda d: int(d.find_element(By.ID, 'online-stats')
                                                 .get_attribute('data-answered') or 0) >= 3)
        assert d.find_element(By.ID, 'online-label').text in NAMES
        assert len(d.find_elements(By.CSS_SELECTOR, '#online-bars .bar')) == 3
        stats = d.find_element(By.ID, 'online-stats')
        assert 'answers/s' in stats.text and 'ms/frame' in stats.text
        assert float(stats.get_attribute('data-per-second')) > 0
        assert float(stats.get_attribute('data-model-ms')) > 0
        d.find_element(By.ID, 'cam-stop').click()
    finally:
        d.quit()
    assert metric(url, 'tsm_online_frames_total') >= before + 3


def test_camera_with_a_token_sends_it_as_the_subprotocol(files):  # noqa: F811
    """With --token the page asks for it, then opens the WebSocket with the token as the
    subprotocol tsm.bearer.<base64url> (checked before the handshake); a wrong token is
    refused at the handshake and the page asks again."""
    token = 'cam+token/??~'  # its base64url has '_' and would end in '=='
    s = start(files, 'browser_token', '--token', token)
    d = chromium_driver(fake_camera=True)
    try:
        url = s.wait().url
        d.get(url + '/')
        for given in ('wrong', token):
            WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, 'token').is_displayed())
            d.find_element(By.ID, 'token').clear()
            d.find_element(By.ID, 'token').send_keys(given)
            d.find_element(By.ID, 'token-save').click()
            if given == 'wrong':  # /v1/model refuses it too: the row comes back
                continue
            WebDriverWait(d, 30).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
        d.find_element(By.ID, 'cam-start').click()
        WebDriverWait(d, 60).until(lambda d: int(d.find_element(By.ID, 'online-stats')
                                                 .get_attribute('data-answered') or 0) >= 2)
        d.find_element(By.ID, 'cam-stop').click()
        d.execute_script("sessionStorage.setItem('tsm-token', 'wrong'); location.reload();")
        WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, 'token').is_displayed())
        d.find_element(By.ID, 'cam-start').click()
        WebDriverWait(d, 30).until(lambda d: 'refused' in d.find_element(By.ID, 'online-stats').text)
    finally:
        d.quit()
        s.stop()
    assert '"WebSocket /v1/online" 401' in s.log and '[accepted]' in s.log
