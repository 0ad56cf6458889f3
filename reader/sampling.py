"""Which frames a clip takes: the original's segment-based sampling (TSN style)."""


def segment_indices(num_frames, seg_num, seglen, mode, rng=None):
    """Frame indices, seg_num * seglen of them, in time order.

    The video is cut into seg_num segments of `average_dur = num_frames // seg_num`
    frames.  Training takes `seglen` consecutive frames at a random offset in each
    segment; evaluation takes them from the middle.  Short videos fall back to
    `i * average_dur`, then to `i`; every index is taken modulo num_frames.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    average_dur = num_frames // seg_num
    indices = []
    for i in range(seg_num):
        if average_dur >= seglen:
            if mode == 'train':
                start = int(rng.integers(0, average_dur - seglen + 1))  # randint inclusive
            else:
                start = (average_dur - 1) // 2
            start += i * average_dur
        elif average_dur >= 1:
            start = i * average_dur
        else:
            start = i
        indices.extend((j % num_frames) for j in range(start, start + seglen))
    return indices
