"""A JAX reference of gradflow's bench step, for the side-by-side figures of docs/performance.md.

    pip install jax          # in a separate environment: JAX is not a gradflow dependency
    taskset -c 1 python docs/performance/jax_reference.py uoro:32 nobacktrack:64 rtrl:64 ...

The run of ``gradflow bench`` (task ``add``, model ``rnn`` with n hidden units, B = 1, float64,
SGD with learning rate 1e-5, the recurrent part clipped to norm 0.1 for the rank-one estimators)
written in JAX with the same work per step: forward, readout, softmax cross-entropy, readout VJP,
the estimator (readout-only, UORO, NoBackTrack, RTRL; TBPTT as one window of 10 steps per call),
clipping, SGD. Each is timed two ways, one thread (XLA's intra-op parallelism off): one jitted
step per Python call (what an online loop that looks at every step pays), and ``lax.scan`` over
1000 steps in one call (the compiled loop: no per-step dispatch at all). The median of 7 blocks,
µs per step. Not part of the test suite or of asv (it lives here, not in benchmarks/, which asv
imports whole).
"""
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
EPS = 1e-7
LR = 1e-5
CLIP = 0.1


def data(T, seed=0):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=T + 10)
    x = np.stack([1 - bits, bits], 1).astype(np.float64)
    y = 0.5 + 0.5 * np.roll(bits, 5) - 0.25 * np.roll(bits, 9)
    t = np.stack([1 - y, y], 1)
    return np.ascontiguousarray(x[10:, None, :]), np.ascontiguousarray(t[10:, None, :])


def init(n, seed=0):
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(n)
    p = dict(W_hh=rng.uniform(-s, s, (n, n)), W_xh=rng.uniform(-s, s, (n, 2)),
             b_h=rng.uniform(-s, s, (n,)), W_hy=rng.uniform(-s, s, (2, n)), b_y=np.zeros(2))
    return {k: jnp.asarray(v) for k, v in p.items()}


def rec(p):
    return {k: p[k] for k in ("W_hh", "W_xh", "b_h")}


def cell(r, h, x):
    return jnp.tanh(h @ r["W_hh"].T + x @ r["W_xh"].T + r["b_h"])


def out_loss(o, h, y):
    logits = h @ o["W_hy"].T + o["b_y"]
    return -jnp.sum(y * jax.nn.log_softmax(logits)) / h.shape[0]


def split(p):
    return rec(p), {"W_hy": p["W_hy"], "b_y": p["b_y"]}


def tree_norm(t):
    """The Euclidean norm of a pytree of arrays."""
    return jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(t)))


def clip_rec(g):
    f = jnp.minimum(1.0, CLIP / (tree_norm(g) + 1e-12))
    return {k: v * f for k, v in g.items()}


def sgd(p, gr, go):
    q = dict(p)
    q.update({k: p[k] - LR * gr[k] for k in gr})
    q.update({k: p[k] - LR * go[k] for k in go})
    return q


def readout_only_step(carry, xy):
    p, h = carry
    x, y = xy
    r, o = split(p)
    h = cell(r, h, x)
    go = jax.grad(out_loss)(o, h, y)
    p = sgd(p, {}, go)
    return (p, h), None


def _rank_one_start(p, h, v, x, key):
    """What both rank-one steps begin with: the forward step with its VJP, J ṽ, fresh signs."""
    r, o = split(p)
    h_new, vjp_fn = jax.vjp(lambda rr, hh: cell(rr, hh, x), r, h)
    _, jv = jax.jvp(lambda hh: cell(r, hh, x), (h,), (v,))
    key, sub = jax.random.split(key)
    return o, h_new, vjp_fn, jv, key, jax.random.rademacher(sub, h.shape, dtype=h.dtype)


def _rank_one_finish(p, o, h_new, y, v, w, key):
    """What both end with: the readout gradient, g_rec = (δ · ṽ) w̃ clipped, SGD."""
    go, dh = jax.grad(out_loss, argnums=(0, 1))(o, h_new, y)
    gr = jax.tree_util.tree_map(lambda a: jnp.sum(dh * v) * a, w)
    return (sgd(p, clip_rec(gr), go), h_new, v, w, key), None


def uoro_step(carry, xy):
    (p, h, v, w, key), (x, y) = carry, xy
    o, h_new, vjp_fn, jv, key, nu = _rank_one_start(p, h, v, x, key)
    dtheta, _ = vjp_fn(nu)
    rho0 = jnp.sqrt((tree_norm(w) + EPS) / (tree_norm(jv) + EPS))
    rho1 = jnp.sqrt((tree_norm(dtheta) + EPS) / (tree_norm(nu) + EPS))
    v = rho0 * jv + rho1 * nu
    w = jax.tree_util.tree_map(lambda a, b: a / rho0 + b / rho1, w, dtheta)
    return _rank_one_finish(p, o, h_new, y, v, w, key)


def nbt_step(carry, xy):
    (p, h, v, w, key), (x, y) = carry, xy
    o, h_new, vjp_fn, jv, key, eps_k = _rank_one_start(p, h, v, x, key)
    d = 1 - h_new * h_new
    rows = d * jnp.sqrt(jnp.sum(h * h) + jnp.sum(x * x) + 1.0)  # |F[k, :]|
    rho_k = jnp.sqrt((rows + EPS) / (1 + EPS))
    rho_bar = jnp.sqrt((tree_norm(w) + EPS) / (tree_norm(jv) + EPS))
    v = rho_bar * jv + eps_k * rho_k
    dtheta, _ = vjp_fn(eps_k / rho_k)
    w = jax.tree_util.tree_map(lambda a, b: a / rho_bar + b, w, dtheta)
    return _rank_one_finish(p, o, h_new, y, v, w, key)


def rtrl_step(carry, xy):
    (p, h, G), (x, y) = carry, xy  # G: (n, P_rec) flat
    r, o = split(p)
    flat, unravel = jax.flatten_util.ravel_pytree(r)
    f = lambda fl, hh: cell(unravel(fl), hh, x)  # noqa
    h_new = f(flat, h)
    J = jax.jacfwd(lambda hh: f(flat, hh[None])[0])(h[0])  # (n, n)
    F = jax.jacrev(lambda fl: f(fl, h)[0])(flat)  # (n, P_rec)
    G = J @ G + F
    go, dh = jax.grad(out_loss, argnums=(0, 1))(o, h_new, y)
    g = dh[0] @ G
    p = sgd(p, unravel(g), go)
    return (p, h_new, G), None


def tbptt_block(carry, xs):
    """k steps forward, then backprop the window's losses through it (truncation k = interval)."""
    p, h = carry

    def loss(p, h0):
        r, o = split(p)

        def body(hh, xy):
            x, y = xy
            hn = cell(r, hh, x)
            return hn, out_loss(o, hn, y)
        hT, losses = jax.lax.scan(body, h0, xs)
        return jnp.sum(losses), hT
    (_, hT), g = jax.value_and_grad(loss, has_aux=True)(p, h)
    gr = clip_rec(rec(g))
    go = {k: g[k] for k in ("W_hy", "b_y")}
    return (sgd(p, gr, go), jax.lax.stop_gradient(hT)), None


def _inputs(X, Y, i, block):
    """The inputs of call i: one step, or a window of ``block`` steps."""
    if block > 1:
        return X[i * block:(i + 1) * block], Y[i * block:(i + 1) * block]
    return X[i], Y[i]


def time_calls(fn, carry, X, Y, steps, rounds=7, block=1):
    """µs per step: one jitted call per step (block steps per call for tbptt)."""
    j = jax.jit(fn)
    n_calls = steps // block
    for i in range(20):  # warm-up
        carry, _ = j(carry, _inputs(X, Y, i, block))
    jax.block_until_ready(carry)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n_calls):
            carry, _ = j(carry, _inputs(X, Y, i, block))
        jax.block_until_ready(carry)
        out.append((time.perf_counter() - t0) / steps * 1e6)
    return float(np.median(out))


def time_scan(fn, carry, X, Y, steps=1000, rounds=7, block=1):
    if block > 1:
        shape = (steps // block, block, 1, 2)
        Xb, Yb = X[:steps].reshape(shape), Y[:steps].reshape(shape)
    else:
        Xb, Yb = X[:steps], Y[:steps]
    s = jax.jit(lambda c, a, b: jax.lax.scan(fn, c, (a, b)))
    c, _ = s(carry, Xb, Yb)
    jax.block_until_ready(c)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        c, _ = s(carry, Xb, Yb)
        jax.block_until_ready(c)
        out.append((time.perf_counter() - t0) / steps * 1e6)
    return float(np.median(out))


def carries(name, n):
    p = init(n)
    h = jnp.zeros((1, n))
    if name in ("uoro", "nobacktrack"):
        return (p, h, jnp.zeros((1, n)), {k: jnp.zeros_like(v) for k, v in rec(p).items()},
                jax.random.PRNGKey(0))
    if name == "rtrl":
        return (p, h, jnp.zeros((n, n * n + 3 * n)))
    return (p, h)


STEPS = {"readout-only": readout_only_step, "uoro": uoro_step, "nobacktrack": nbt_step,
         "rtrl": rtrl_step, "tbptt": tbptt_block}

if __name__ == "__main__":
    import jax.flatten_util
    X, Y = data(20000)
    plan = [a.split(":") for a in sys.argv[1:]] or [
        ("readout-only", "32"), ("tbptt", "32"), ("uoro", "32"), ("nobacktrack", "32"),
        ("uoro", "64"), ("nobacktrack", "64"), ("rtrl", "64")]
    for name, n in plan:
        n = int(n)
        block = 10 if name == "tbptt" else 1
        steps = 2000 if name != "rtrl" else 300
        one = time_calls(STEPS[name], carries(name, n), X, Y, steps, block=block)
        scan = time_scan(STEPS[name], carries(name, n), X, Y, 1000, block=block)
        print(f"{name:14s} n={n:5d}  one call/step {one:9.1f} µs   scan {scan:9.1f} µs", flush=True)
