"""The proof systems, byte for byte: Bulletproofs+ (proofs.md §9.4), Bulletproofs (§9.5)."""
from .primitives import *  # noqa: F401,F403


# ---------------------------------------------------------------------------------------------
# §9.4 Bulletproofs+ (statement proofs §2, §2.2; meter reports, metering.md §3.4)
# ---------------------------------------------------------------------------------------------
ZERO32 = bytes(32)


def bpplus_decode(proof: bytes):
    """§9.4 "decodes": the check metering.md §6.1 step 6 makes of minutes_range.
    Returns (t, scalars d1, A, A1, B, r1, s1, [(L, R)]) or raises Fail."""
    if not proof:
        raise Fail("proof-invalid", "empty Bulletproofs+ proof")
    t = proof[0]
    rest = proof[1:]
    if not 1 <= t <= 6 or len(rest) % 32:
        raise Fail("proof-invalid", f"degree {t} or length {len(proof)}")
    words = [rest[i:i + 32] for i in range(0, len(rest), 32)]
    npairs2 = len(words) - (t + 3 + 2)
    if npairs2 <= 0 or npairs2 % 2:
        raise Fail("proof-invalid", "no or odd number of L/R strings")
    d1 = [sc(w) for w in words[:t]]
    r1, s1 = sc(words[t + 3]), sc(words[t + 4])
    if any(x is None for x in d1) or r1 is None or s1 is None:
        raise Fail("proof-invalid", "non-canonical scalar")
    a, a1, b = words[t], words[t + 1], words[t + 2]
    lr = words[t + 5:]
    pairs = [(lr[2 * i], lr[2 * i + 1]) for i in range(len(lr) // 2)]
    return t, d1, a, a1, b, r1, s1, pairs


def s_vector(chals, k):
    """§9.4: s_i = Π_t e_t^{b(i,t)}, b(i,t) = +1 if bit (k − t) of i is 1 else −1."""
    invs = [inv(e) for e in chals]
    out = []
    for i in range(1 << k):
        s = 1
        for t in range(1, k + 1):
            s = s * (chals[t - 1] if (i >> (k - t)) & 1 else invs[t - 1]) % L
        out.append(s)
    return out


def bpplus_verify(tr: Transcript, commitments, n: int, proof: bytes, trace=None):
    """§9.4: True iff the proof verifies for `commitments` (32-byte encodings) over n bits on
    transcript `tr` (holding the caller's messages). Raises Fail('proof-invalid') if it does
    not decode. `trace`, a dict, receives the challenges (for §9.8)."""
    t, d1, a_b, a1_b, b_b, r1, s1, pairs = bpplus_decode(proof)
    c = len(commitments)
    m = 1
    while m < c:
        m *= 2
    big_n = n * m
    k = big_n.bit_length() - 1
    if t != 1 or len(pairs) != k or (1 << k) != big_n:
        return False
    vs = list(commitments) + [ZERO32] * (m - c)
    v_pts = [dec(v) for v in vs]
    if any(p is None for p in v_pts):
        return False
    tr.append_message("dom-sep", "Bulletproofs+ Range Proof")
    tr.append_message("H", ENC_B)
    tr.append_message("G", enc(PT_BT))
    tr.append_u64("N", n)
    tr.append_u64("T", 1)
    tr.append_u64("M", m)
    for v in vs:
        tr.append_message("Ci", v)
    for _ in range(m):
        tr.append_u64("vi - minimum_value", 0)
    if a_b == ZERO32:
        return False
    tr.append_message("A", a_b)
    y = tr.chal("y")
    z = tr.chal("z")
    es = []
    for lb, rb in pairs:
        if lb == ZERO32 or rb == ZERO32:
            return False
        tr.append_message("L", lb)
        tr.append_message("R", rb)
        es.append(tr.chal("e"))
    if a1_b == ZERO32 or b_b == ZERO32:
        return False
    tr.append_message("A1", a1_b)
    tr.append_message("B", b_b)
    e = tr.chal("e")
    if trace is not None:
        trace.update(y=y, z=z, e=e, es=es)
    if 0 in [y, z, e] + es:
        return False
    pts = [dec(x) for x in (a_b, a1_b, b_b)]
    lrs = [(dec(lb), dec(rb)) for lb, rb in pairs]
    if any(p is None for p in pts) or any(p is None for pr in lrs for p in pr):
        return False
    pa, pa1, pb = pts
    d1 = d1[0]

    # Scalars (§9.4)
    s = s_vector(es, k)
    yinv = inv(y)
    y_pow = [1] * (big_n + 2)
    for i in range(1, big_n + 2):
        y_pow[i] = y_pow[i - 1] * y % L
    yinv_pow = [1] * big_n
    for i in range(1, big_n):
        yinv_pow[i] = yinv_pow[i - 1] * yinv % L
    z2 = z * z % L
    z2j = [1] * (m + 1)  # z2j[j] = z^{2j}
    for j in range(1, m + 1):
        z2j[j] = z2j[j - 1] * z2 % L
    d = [z2j[i // n + 1] * pow(2, i % n, L) % L for i in range(big_n)]
    sum_d = ((1 << n) - 1) * sum(z2j[1:m + 1]) % L
    sum_y = sum(y_pow[1:big_n + 1]) % L
    e2 = e * e % L

    scalars, points = [], []
    g_vec = flat_generators("G", n, m)
    h_vec = flat_generators("H", n, m)
    for i in range(big_n):
        scalars.append((r1 * e % L * yinv_pow[i] % L * s[i] + e2 * z) % L)
        points.append(g_vec[i])
    for i in range(big_n):
        scalars.append((s1 * e % L * s[big_n - 1 - i] - e2 * (d[i] * y_pow[big_n - i] + z)) % L)
        points.append(h_vec[i])
    for j in range(m):
        scalars.append(-e2 * z2j[j + 1] % L * y_pow[big_n + 1] % L)
        points.append(v_pts[j])
    scalars.append((r1 * y % L * s1 + e2 * (y_pow[big_n + 1] * z % L * sum_d + (z2 - z) * sum_y)) % L)
    points.append(PT_B)
    scalars.append(d1)
    points.append(PT_BT)
    scalars += [-e % L, L - 1, -e2 % L]
    points += [pa1, pb, pa]
    for et, (lp, rp) in zip(es, lrs):
        scalars.append(-e2 * et % L * et % L)
        points.append(lp)
        scalars.append(-e2 * inv(et * et) % L)
        points.append(rp)
    return is_identity(msm(scalars, points))


# ---------------------------------------------------------------------------------------------
# §9.5 Bulletproofs (revenue threshold, §3.4)
# ---------------------------------------------------------------------------------------------
def bp_verify(tr: Transcript, v_pt, proof: bytes, trace=None):
    """§9.5: single 64-bit Bulletproofs range proof for V = v_pt. Raises Fail on bad bytes."""
    if len(proof) != 672:
        raise Fail("proof-invalid", f"Bulletproofs proof of {len(proof)} bytes, not 672")
    w = [proof[i:i + 32] for i in range(0, 672, 32)]
    a_b, s_b, t1_b, t2_b = w[0:4]
    tx, txb, eb = sc(w[4]), sc(w[5]), sc(w[6])
    lr = [(w[7 + 2 * i], w[8 + 2 * i]) for i in range(6)]
    a_sc, b_sc = sc(w[19]), sc(w[20])
    if None in (tx, txb, eb, a_sc, b_sc):
        raise Fail("proof-invalid", "non-canonical scalar")
    tr.append_message("dom-sep", "rangeproof v1")
    tr.append_u64("n", 64)
    tr.append_u64("m", 1)
    tr.append_message("V", enc(v_pt))
    for lab, x in (("A", a_b), ("S", s_b)):
        if x == ZERO32:
            return False
        tr.append_message(lab, x)
    y = tr.chal("y")
    z = tr.chal("z")
    for lab, x in (("T_1", t1_b), ("T_2", t2_b)):
        if x == ZERO32:
            return False
        tr.append_message(lab, x)
    x = tr.chal("x")
    tr.append_message("t_x", w[4])
    tr.append_message("t_x_blinding", w[5])
    tr.append_message("e_blinding", w[6])
    wch = tr.chal("w")
    tr.append_message("dom-sep", "ipp v1")
    tr.append_u64("n", 64)
    us = []
    for lb, rb in lr:
        if lb == ZERO32 or rb == ZERO32:
            return False
        tr.append_message("L", lb)
        tr.append_message("R", rb)
        us.append(tr.chal("u"))
    if trace is not None:
        trace.update(y=y, z=z, x=x, w=wch, us=us)
    pa, ps, pt1, pt2 = (dec(q) for q in (a_b, s_b, t1_b, t2_b))
    lrs = [(dec(lb), dec(rb)) for lb, rb in lr]
    if None in (pa, ps, pt1, pt2) or any(q is None for pr in lrs for q in pr):
        return False
    z2 = z * z % L
    sum_y = sum(pow(y, i, L) for i in range(64)) % L
    delta = ((z - z2) * sum_y - z2 * z % L * ((1 << 64) - 1)) % L
    # (E1)  t_x·B + t̃_x·B̃ − z²·V − δ·B − x·T₁ − x²·T₂ = identity
    e1 = msm([(tx - delta) % L, txb, -z2 % L, -x % L, -x * x % L], [PT_B, PT_BT, v_pt, pt1, pt2])
    if not is_identity(e1):
        return False
    # (E2)
    s = s_vector(us, 6)
    yinv = inv(y)
    g_vec = flat_generators("G", 64, 1)
    h_vec = flat_generators("H", 64, 1)
    scalars = [1, x, -eb % L, wch * (tx - a_sc * b_sc) % L]
    points = [pa, ps, PT_BT, PT_B]
    yinv_i = 1
    for i in range(64):
        scalars.append((-z - a_sc * s[i]) % L)
        points.append(g_vec[i])
        scalars.append((z + yinv_i * (z2 * pow(2, i, L) - b_sc * s[63 - i])) % L)
        points.append(h_vec[i])
        yinv_i = yinv_i * yinv % L
    for u, (lp, rp) in zip(us, lrs):
        scalars += [u * u % L, inv(u * u)]
        points += [lp, rp]
    return is_identity(msm(scalars, points))
