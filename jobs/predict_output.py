"""How predict.py writes what it predicted: printed lines, then JSON and CSV files (a
list, windows along videos, or a stream's frames)."""
import csv
import json
import logging
import os

logger = logging.getLogger(__name__)


def clock(seconds):
    """00:07, 01:02:03, 00:02.5 (tenths only when the time is not whole)."""
    whole = abs(seconds - round(seconds)) < 1e-6
    s = round(seconds) if whole else seconds
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    text = f"{int(m):02d}:{int(sec):02d}" if whole else f"{int(m):02d}:{sec:04.1f}"
    return f"{int(h)}:{text}" if h else text


def report(records, names, times=None):
    """Name the classes of each record, attach window times, print; -> records as saved."""
    out, last_path = [], None
    for rec in records:
        rec = dict(rec)
        index = rec.pop('index', None)
        rec['top_names'] = [names[i] for i in rec['top_indices']]
        if times is not None:
            rec['start'], rec['end'] = times[index]
            if rec['path'] != last_path:
                print(f"{rec['path']}:")
            print(f"    {clock(rec['start'])}-{clock(rec['end'])}  {rec['top_names'][0]} "
                  f"{rec['top_probs'][0]:.2f}")
        else:
            print(f"{rec['path']}:")
            for name, prob in zip(rec['top_names'], rec['top_probs']):
                print(f"    {name}: {prob:.5f}")
        last_path = rec['path']
        out.append(rec)
    return out


def write_results(records, save_dir, name='predict_results'):
    """<save_dir>/<name>.json and .csv (one row per class of each prediction:
    path[, start, end], rank, class index, class name, probability)."""
    os.makedirs(save_dir, exist_ok=True)
    with open(os.path.join(save_dir, name + '.json'), 'w', encoding='utf-8') as f:
        json.dump(records, f, indent=2)
    windows = bool(records) and 'start' in records[0]
    with open(os.path.join(save_dir, name + '.csv'), 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['path'] + (['start_s', 'end_s'] if windows else []) +
                   ['rank', 'class_index', 'class_name', 'probability'])
        for rec in records:
            lead = [rec['path']] + ([rec['start'], rec['end']] if windows else [])
            for rank, (i, n, p) in enumerate(zip(rec['top_indices'], rec['top_names'],
                                                 rec['top_probs']), 1):
                w.writerow(lead + [rank, i, n, f"{p:.6f}"])
    logger.info("wrote %s.json and %s.csv in %s", name, name, save_dir)


def write_online(records, source, save_dir):
    """<save_dir>/online_results.json (source, frames, label changes) and .csv (per frame)."""
    os.makedirs(save_dir, exist_ok=True)
    changes = [r for i, r in enumerate(records)
               if i == 0 or r['class_index'] != records[i - 1]['class_index']]
    with open(os.path.join(save_dir, 'online_results.json'), 'w', encoding='utf-8') as f:
        json.dump({'source': source, 'frames': records, 'changes': changes}, f, indent=1)
    with open(os.path.join(save_dir, 'online_results.csv'), 'w', newline='',
              encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['frame', 'time_s', 'class_index', 'class_name', 'probability'])
        for r in records:
            w.writerow([r['frame'], '' if r['time'] is None else r['time'], r['class_index'],
                        r['class_name'], f"{r['probability']:.6f}"])
    logger.info("wrote online_results.json and online_results.csv in %s", save_dir)
