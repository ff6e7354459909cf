"""A TensorFlow input pipeline with an emulated training step, for the TFJob
benchmark (bench/tfjob.sh). One process is one TFJob worker.

  train.py gen OUT --shards 16 --records 1152
      writes OUT/train-NNNNN-of-MMMMM.tfrecord: tf.train.Example records of a
      raw 192x192x3 uint8 image (108 KiB, about an ImageNet JPEG) and a label

  train.py run --data /data | --synthetic IMAGES  [--batch 32] [--compute_ms 100]
               [--epochs 2] [--warmup 5]
      files: tf.data over this worker's shards (file i goes to worker
      i % workers): interleave of TFRecordDatasets, a small shuffle,
      parse_single_example, decode_raw, a random flip, batch, float32,
      prefetch. synthetic: one batch of random tensors made in memory,
      repeated (no I/O, no parsing), IMAGES/workers images an epoch.
      Each batch is followed by a sleep of --compute_ms (the accelerator's
      step). The worker's place comes from TF_CONFIG, which the Kubeflow
      training-operator sets; before each epoch the workers wait for each
      other (worker 0 holds a TCP barrier at its TF_CONFIG address), so that
      all of them read at once. One line an epoch:

      tfbench worker=0 workers=2 epoch=1 images=8960 seconds=15.1 images_per_s=593.2 mb_per_s=65.6

      The first --warmup batches of each epoch are left out of the figures.
"""
import argparse
import json
import os
import socket
import sys
import time

HEIGHT, WIDTH, CHANNELS = 192, 192, 3
IMAGE_BYTES = HEIGHT * WIDTH * CHANNELS


def tf_config():
    """(index, workers, address of worker 0) from TF_CONFIG; (0, 1, None) without it."""
    cfg = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = cfg.get("cluster", {}).get("worker", [])
    task = cfg.get("task", {})
    if not workers:
        return 0, 1, None
    if task.get("type", "worker") != "worker":
        sys.exit(f"train.py: task type {task.get('type')!r}: only workers are expected")
    return int(task.get("index", 0)), len(workers), workers[0]


class Barrier:
    """Worker 0 listens at its TF_CONFIG address; the others connect. wait()
    returns once every worker has called it."""

    def __init__(self, index, workers, addr0, timeout=600, connect_timeout=120):
        self.index, self.workers, self.peers, self.conn = index, workers, [], None
        if workers == 1:
            return
        host, port = addr0.rsplit(":", 1)
        deadline = time.monotonic() + connect_timeout
        if index == 0:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("0.0.0.0", int(port)))
            srv.listen(workers)
            srv.settimeout(connect_timeout)
            while len(self.peers) < workers - 1:
                c, _ = srv.accept()
                c.settimeout(timeout)
                self.peers.append(c)
            srv.close()
            return
        while True:
            try:
                # The operator's Service for worker 0 resolves once its pod runs.
                self.conn = socket.create_connection((host, int(port)), timeout=5)
                self.conn.settimeout(timeout)
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    sys.exit(f"train.py: worker 0 at {addr0} unreachable: {e}")
                time.sleep(0.5)

    def wait(self):
        if self.workers == 1:
            return
        if self.index == 0:
            for c in self.peers:
                if c.recv(1) != b"r":
                    sys.exit("train.py: a worker left")
            for c in self.peers:
                c.sendall(b"g")
        else:
            self.conn.sendall(b"r")
            if self.conn.recv(1) != b"g":
                sys.exit("train.py: worker 0 left")


def gen(args):
    import numpy as np
    import tensorflow as tf

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    total = 0
    for s in range(args.shards):
        path = os.path.join(args.out, f"train-{s:05d}-of-{args.shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path + ".tmp") as w:
            for r in range(args.records):
                img = rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8).tobytes()
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
                    "image/class/label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(rng.integers(0, 1000))])),
                }))
                w.write(ex.SerializeToString())
                total += 1
        os.rename(path + ".tmp", path)
    print(f"shards={args.shards} records={total} bytes="
          f"{sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))}")


def file_dataset(tf, files, batch):
    feats = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(rec):
        ex = tf.io.parse_single_example(rec, feats)
        img = tf.reshape(tf.io.decode_raw(ex["image/encoded"], tf.uint8), [HEIGHT, WIDTH, CHANNELS])
        return tf.image.random_flip_left_right(img), ex["image/class/label"]

    def to_float(img, label):
        return tf.cast(img, tf.float32) * (1.0 / 255), label

    auto = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                       cycle_length=min(4, len(files)), num_parallel_calls=auto, deterministic=False)
    ds = ds.shuffle(256)
    ds = ds.map(parse, num_parallel_calls=auto, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(to_float, num_parallel_calls=auto)
    return ds.prefetch(auto)


def synthetic_dataset(tf, images, batch):
    x = tf.random.uniform([batch, HEIGHT, WIDTH, CHANNELS], dtype=tf.float32)
    y = tf.random.uniform([batch], maxval=1000, dtype=tf.int64)
    return tf.data.Dataset.from_tensors((x, y)).repeat(images // batch).prefetch(tf.data.AUTOTUNE)


def run(args):
    index, workers, addr0 = tf_config()
    t_import = time.monotonic()
    import tensorflow as tf
    print(f"tfbench worker={index} workers={workers} tensorflow={tf.__version__} "
          f"import_s={time.monotonic() - t_import:.1f} cpus={os.cpu_count()}", flush=True)

    if args.synthetic:
        ds = synthetic_dataset(tf, args.synthetic // workers, args.batch)
        mine = []
    else:
        files = sorted(os.path.join(args.data, f) for f in os.listdir(args.data)
                       if f.endswith(".tfrecord"))
        mine = files[index::workers]
        if not mine:
            sys.exit(f"train.py: no .tfrecord files for worker {index} of {workers} in {args.data}")
        ds = file_dataset(tf, mine, args.batch)
    barrier = Barrier(index, workers, addr0)
    compute = args.compute_ms / 1000.0
    for epoch in range(1, args.epochs + 1):
        barrier.wait()
        start = time.time()
        n, t0, nbytes = 0, None, 0
        for i, (x, _) in enumerate(ds):
            if i == args.warmup:
                t0 = time.monotonic()
            elif i > args.warmup:
                n += int(x.shape[0])
            time.sleep(compute)
        t1 = time.monotonic()
        if t0 is None or n == 0:
            sys.exit(f"train.py: epoch {epoch} had {i + 1} batches, not more than --warmup {args.warmup}")
        # Dataset bytes behind the images counted (the record's framing left out).
        nbytes = n * IMAGE_BYTES
        secs = t1 - t0
        print(f"tfbench worker={index} workers={workers} epoch={epoch} images={n} "
              f"seconds={secs:.2f} images_per_s={n / secs:.1f} mb_per_s={nbytes / 1e6 / secs:.1f} "
              f"start={start:.2f} end={time.time():.2f}", flush=True)
    barrier.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("out")
    g.add_argument("--shards", type=int, default=16)
    g.add_argument("--records", type=int, default=1152, help="records per shard")
    g.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("run")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="directory of .tfrecord shards")
    src.add_argument("--synthetic", type=int, metavar="IMAGES",
                     help="no files: IMAGES images an epoch across all workers, made in memory")
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--compute_ms", type=float, default=100.0)
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.cmd == "gen":
        gen(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
