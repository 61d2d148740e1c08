"""Primitives: Keccak-f[1600], STROBE-128/Merlin (proofs.md §9.2), BLAKE3 (escx-format.md §2),
ristretto255 and scalars (proofs.md §9.1, RFC 9496), generator chains (§9.3), strict CBOR
(escx-format.md §1.1)."""
import hashlib


class Fail(Exception):
    """A verdict other than ok: .code is the spec's error code."""

    def __init__(self, code, why=""):
        super().__init__(f"{code}: {why}")
        self.code = code
        self.why = why


# ---------------------------------------------------------------------------------------------
# Keccak-f[1600] (FIPS 202 §3), lanes as in proofs.md §9.2: lane x+5y = bytes 8(x+5y).. LE.
# ---------------------------------------------------------------------------------------------
M64 = (1 << 64) - 1


def _keccak_constants():
    # Round constants from the LFSR rc(t) of FIPS 202 §3.2.5.
    def rc(t):
        if t % 255 == 0:
            return 1
        r = 1
        for _ in range(t % 255):
            r <<= 1
            if r & 0x100:
                r ^= 0x171
        return r & 1

    rcs = []
    for ir in range(24):
        c = 0
        for j in range(7):
            if rc(j + 7 * ir):
                c |= 1 << ((1 << j) - 1)
        rcs.append(c)
    # Rotation offsets (rho), FIPS 202 §3.2.2.
    rot = [0] * 25
    x, y = 1, 0
    for t in range(24):
        rot[x + 5 * y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5
    return rcs, rot


KECCAK_RC, KECCAK_ROT = _keccak_constants()


def keccak_f1600(state: bytearray) -> bytearray:
    a = [int.from_bytes(state[8 * i:8 * i + 8], "little") for i in range(25)]
    rot = KECCAK_ROT
    for rnd in range(24):
        c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
        d = [c[(x - 1) % 5] ^ (((c[(x + 1) % 5] << 1) | (c[(x + 1) % 5] >> 63)) & M64)
             for x in range(5)]
        a = [a[i] ^ d[i % 5] for i in range(25)]
        b = [0] * 25
        for x in range(5):
            for y in range(5):
                v = a[x + 5 * y]
                r = rot[x + 5 * y]
                b[y + 5 * ((2 * x + 3 * y) % 5)] = ((v << r) | (v >> (64 - r))) & M64 if r else v
        a = [b[i] ^ ((~b[(i % 5 + 1) % 5 + 5 * (i // 5)]) & b[(i % 5 + 2) % 5 + 5 * (i // 5)])
             for i in range(25)]
        a[0] ^= KECCAK_RC[rnd]
    out = bytearray(200)
    for i in range(25):
        out[8 * i:8 * i + 8] = a[i].to_bytes(8, "little")
    return out


def sha3_256_own(msg: bytes) -> bytes:
    """SHA3-256 on our permutation (only to check the lane convention of §9.2)."""
    rate = 136
    m = bytearray(msg) + b"\x06"
    while len(m) % rate:
        m.append(0)
    m[-1] |= 0x80
    st = bytearray(200)
    for off in range(0, len(m), rate):
        for i in range(rate):
            st[i] ^= m[off + i]
        st = keccak_f1600(st)
    return bytes(st[:32])


# ---------------------------------------------------------------------------------------------
# STROBE-128 and Merlin (proofs.md §9.2)
# ---------------------------------------------------------------------------------------------
STROBE_R = 166
FLAG_I, FLAG_A, FLAG_C, FLAG_M, FLAG_K = 0x01, 0x02, 0x04, 0x10, 0x20


class Strobe128:
    def __init__(self, label: bytes):
        st = bytearray(200)
        st[0:6] = bytes([0x01, STROBE_R + 2, 0x01, 0x00, 0x01, 0x60])
        st[6:18] = b"STROBEv1.0.2"
        self.st = keccak_f1600(st)
        self.pos = 0
        self.pos_begin = 0
        self.cur_flags = 0
        self.meta_ad(label, False)

    def copy(self):
        c = Strobe128.__new__(Strobe128)
        c.st = bytearray(self.st)
        c.pos, c.pos_begin, c.cur_flags = self.pos, self.pos_begin, self.cur_flags
        return c

    def run_f(self):
        self.st[self.pos] ^= self.pos_begin
        self.st[self.pos + 1] ^= 0x04
        self.st[STROBE_R + 1] ^= 0x80
        self.st = keccak_f1600(self.st)
        self.pos = 0
        self.pos_begin = 0

    def absorb(self, data: bytes):
        for x in data:
            self.st[self.pos] ^= x
            self.pos += 1
            if self.pos == STROBE_R:
                self.run_f()

    def squeeze(self, n: int) -> bytes:
        out = bytearray()
        for _ in range(n):
            out.append(self.st[self.pos])
            self.st[self.pos] = 0
            self.pos += 1
            if self.pos == STROBE_R:
                self.run_f()
        return bytes(out)

    def begin_op(self, flags, more):
        if more:
            return
        old = self.pos_begin
        self.pos_begin = self.pos + 1
        self.cur_flags = flags
        self.absorb(bytes([old, flags]))
        if flags & (FLAG_C | FLAG_K) and self.pos != 0:
            self.run_f()

    def meta_ad(self, data, more):
        self.begin_op(FLAG_M | FLAG_A, more)
        self.absorb(data)

    def ad(self, data, more):
        self.begin_op(FLAG_A, more)
        self.absorb(data)

    def prf(self, n, more):
        self.begin_op(FLAG_I | FLAG_A | FLAG_C, more)
        return self.squeeze(n)


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


class Transcript:
    """Merlin transcript (proofs.md §9.2)."""

    def __init__(self, label, _strobe=None):
        if _strobe is not None:
            self.s = _strobe
            return
        self.s = Strobe128(b"Merlin v1.0")
        self.append_message("dom-sep", label)

    def copy(self):
        return Transcript(None, self.s.copy())

    def append_message(self, label, msg):
        msg = _b(msg)
        self.s.meta_ad(_b(label), False)
        self.s.meta_ad(len(msg).to_bytes(4, "little"), True)
        self.s.ad(msg, False)

    def append_u64(self, label, x):
        self.append_message(label, (x % (1 << 64)).to_bytes(8, "little"))

    def challenge_bytes(self, label, n):
        self.s.meta_ad(_b(label), False)
        self.s.meta_ad(n.to_bytes(4, "little"), True)
        return self.s.prf(n, False)

    def chal(self, label):
        """chal(label) = wide(challenge_bytes(label, 64)), §9.2."""
        return int.from_bytes(self.challenge_bytes(label, 64), "little") % L


# ---------------------------------------------------------------------------------------------
# BLAKE3 (statement hashes, key ids: escx-format.md §2; settlement.md §4)
# ---------------------------------------------------------------------------------------------
B3_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
         0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
B3_PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
CHUNK_START, CHUNK_END, PARENT, ROOT_F, KEYED, DK_CONTEXT, DK_MATERIAL = 1, 2, 4, 8, 16, 32, 64
M32 = 0xFFFFFFFF


def _b3_compress(cv, block, counter, blen, flags):
    m = [int.from_bytes(block[4 * i:4 * i + 4], "little") for i in range(16)]
    v = list(cv) + B3_IV[:4] + [counter & M32, (counter >> 32) & M32, blen, flags]

    def g(a, b, c, d, x, y):
        v[a] = (v[a] + v[b] + x) & M32
        t = v[d] ^ v[a]; v[d] = ((t >> 16) | (t << 16)) & M32
        v[c] = (v[c] + v[d]) & M32
        t = v[b] ^ v[c]; v[b] = ((t >> 12) | (t << 20)) & M32
        v[a] = (v[a] + v[b] + y) & M32
        t = v[d] ^ v[a]; v[d] = ((t >> 8) | (t << 24)) & M32
        v[c] = (v[c] + v[d]) & M32
        t = v[b] ^ v[c]; v[b] = ((t >> 7) | (t << 25)) & M32

    for r in range(7):
        g(0, 4, 8, 12, m[0], m[1]); g(1, 5, 9, 13, m[2], m[3])
        g(2, 6, 10, 14, m[4], m[5]); g(3, 7, 11, 15, m[6], m[7])
        g(0, 5, 10, 15, m[8], m[9]); g(1, 6, 11, 12, m[10], m[11])
        g(2, 7, 8, 13, m[12], m[13]); g(3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[B3_PERM[i]] for i in range(16)]
    return [v[i] ^ v[i + 8] for i in range(8)] + [v[i + 8] ^ cv[i] for i in range(8)]


def _b3_words(b):
    return b"".join(w.to_bytes(4, "little") for w in b)


def blake3(data: bytes, key_words=None, flags=0, out_len=32) -> bytes:
    key = key_words or B3_IV

    def chunk_output(chunk, counter):
        blocks = [chunk[i:i + 64] for i in range(0, len(chunk), 64)] or [b""]
        cv = key
        for bi, blk in enumerate(blocks):
            f = flags | (CHUNK_START if bi == 0 else 0)
            if bi == len(blocks) - 1:
                return (cv, blk.ljust(64, b"\0"), counter, len(blk), f | CHUNK_END)
            cv = _b3_compress(cv, blk, counter, 64, f)[:8]

    def subtree(data, counter):
        """Returns the pending output (cv, block, counter, len, flags) of this subtree's root."""
        if len(data) <= 1024:
            return chunk_output(data, counter)
        chunks = (len(data) - 1) // 1024
        left = 1 << (chunks.bit_length() - 1)  # largest power of two leaving >= 1 byte
        lo = subtree(data[:left * 1024], counter)
        ro = subtree(data[left * 1024:], counter + left)
        lcv = _b3_compress(*lo)[:8]
        rcv = _b3_compress(*ro)[:8]
        return (key, _b3_words(lcv + rcv), 0, 64, flags | PARENT)

    cv, blk, ctr, blen, f = subtree(data, 0)
    out = b""
    i = 0
    while len(out) < out_len:
        out += _b3_words(_b3_compress(cv, blk, i, blen, f | ROOT_F))
        i += 1
    return out[:out_len]


def derive_key(context: str, material: bytes, out_len=32) -> bytes:
    ck = blake3(context.encode(), flags=DK_CONTEXT)
    kw = [int.from_bytes(ck[4 * i:4 * i + 4], "little") for i in range(8)]
    return blake3(material, key_words=kw, flags=DK_MATERIAL, out_len=out_len)


# ---------------------------------------------------------------------------------------------
# ristretto255 (RFC 9496) and scalars (proofs.md §9.1)
# ---------------------------------------------------------------------------------------------
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
ED_D = (-121665 * pow(121666, P - 2, P)) % P
ED_D2 = 2 * ED_D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def is_negative(x):
    return (x % P) & 1


def ct_abs(x):
    x %= P
    return (P - x) % P if x & 1 else x


def sqrt_ratio_m1(u, v):
    """RFC 9496 §4.2: (was_square, non-negative root of u/v or of i·u/v)."""
    u %= P
    v %= P
    v3 = v * v % P * v % P
    v7 = v3 * v3 % P * v % P
    r = u * v3 % P * pow(u * v7 % P, (P - 5) // 8, P) % P
    check = v * r % P * r % P
    correct = check == u
    flipped = check == (-u) % P
    flipped_i = check == (-u * SQRT_M1) % P
    if flipped or flipped_i:
        r = r * SQRT_M1 % P
    return (correct or flipped), ct_abs(r)


_, INVSQRT_A_MINUS_D = sqrt_ratio_m1(1, (-1 - ED_D) % P)
_, SQRT_AD_MINUS_ONE = sqrt_ratio_m1((-ED_D - 1) % P, 1)
SQRT_AD_MINUS_ONE = P - SQRT_AD_MINUS_ONE  # RFC 9496 §4.1 lists the odd ("negative") root
ONE_MINUS_D_SQ = (1 - ED_D * ED_D) % P
D_MINUS_ONE_SQ = (ED_D - 1) * (ED_D - 1) % P

IDENTITY = (0, 1, 1, 0)  # extended Edwards (X, Y, Z, T)


def pt_add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * ED_D2 % P * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def pt_double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    e = ((x1 + y1) * (x1 + y1) - a - b) % P
    g = b - a          # D + B with D = -A
    f = g - c
    h = -a - b         # D - B
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def pt_neg(p1):
    x, y, z, t = p1
    return ((-x) % P, y, z, (-t) % P)


def pt_eq(p1, p2):
    """RFC 9496 §4.3.3."""
    x1, y1, _, _ = p1
    x2, y2, _, _ = p2
    return (x1 * y2 - y1 * x2) % P == 0 or (y1 * y2 - x1 * x2) % P == 0


def dec(b: bytes):
    """RFC 9496 §4.3.1 DECODE; None when b is not a canonical encoding."""
    if len(b) != 32:
        return None
    s = int.from_bytes(b, "little")
    if s >= P or is_negative(s):
        return None
    ss = s * s % P
    u1 = (1 - ss) % P
    u2 = (1 + ss) % P
    u2_sqr = u2 * u2 % P
    v = (-(ED_D * u1 % P * u1) - u2_sqr) % P
    was_square, invsqrt = sqrt_ratio_m1(1, v * u2_sqr)
    den_x = invsqrt * u2 % P
    den_y = invsqrt * den_x % P * v % P
    x = ct_abs(2 * s * den_x)
    y = u1 * den_y % P
    t = x * y % P
    if not was_square or is_negative(t) or y == 0:
        return None
    return (x, y, 1, t)


def enc(pt) -> bytes:
    """RFC 9496 §4.3.2 ENCODE."""
    x0, y0, z0, t0 = pt
    u1 = (z0 + y0) * (z0 - y0) % P
    u2 = x0 * y0 % P
    _, invsqrt = sqrt_ratio_m1(1, u1 * u2 % P * u2)
    den1 = invsqrt * u1 % P
    den2 = invsqrt * u2 % P
    z_inv = den1 * den2 % P * t0 % P
    if is_negative(t0 * z_inv):
        x, y = y0 * SQRT_M1 % P, x0 * SQRT_M1 % P
        den_inv = den1 * INVSQRT_A_MINUS_D % P
    else:
        x, y, den_inv = x0, y0, den2
    if is_negative(x * z_inv):
        y = (-y) % P
    s = ct_abs(den_inv * (z0 - y))
    return s.to_bytes(32, "little")


def ristretto_map(t):
    """RFC 9496 §4.3.4 MAP."""
    r = SQRT_M1 * t % P * t % P
    u = (r + 1) * ONE_MINUS_D_SQ % P
    v = (-1 - r * ED_D) * (r + ED_D) % P
    was_square, s = sqrt_ratio_m1(u, v)
    if not was_square:
        s = (-ct_abs(s * t)) % P
        c = r
    else:
        c = P - 1
    n = (c * (r - 1) % P * D_MINUS_ONE_SQ - v) % P
    w0 = 2 * s * v % P
    w1 = n * SQRT_AD_MINUS_ONE % P
    w2 = (1 - s * s) % P
    w3 = (1 + s * s) % P
    return (w0 * w3 % P, w2 * w1 % P, w1 * w3 % P, w0 * w2 % P)


def from_uniform(b64: bytes):
    """§9.1: each half, bit 255 cleared, mod p, through MAP; the two points added."""
    t1 = (int.from_bytes(b64[:32], "little") & ((1 << 255) - 1)) % P
    t2 = (int.from_bytes(b64[32:64], "little") & ((1 << 255) - 1)) % P
    return pt_add(ristretto_map(t1), ristretto_map(t2))


def sc(b: bytes):
    """§9.1: a canonical scalar, or None."""
    if len(b) != 32:
        return None
    x = int.from_bytes(b, "little")
    return x if x < L else None


def sc_bytes(x: int) -> bytes:
    return (x % L).to_bytes(32, "little")


def wide(b: bytes) -> int:
    return int.from_bytes(b, "little") % L


def inv(x):
    return pow(x % L, L - 2, L)


def scalar_mul(k, pt):
    k %= L
    acc = IDENTITY
    for bit in bin(k)[2:]:
        acc = pt_double(acc)
        if bit == "1":
            acc = pt_add(acc, pt)
    return acc


def msm(scalars, points):
    """Σ scalars[i]·points[i] (Pippenger's bucket method, unsigned windows)."""
    pairs = [(s % L, p) for s, p in zip(scalars, points) if s % L]
    if not pairs:
        return IDENTITY
    n = len(pairs)
    c = 2 if n < 8 else 4 if n < 40 else 5 if n < 120 else 6 if n < 400 else 7
    mask = (1 << c) - 1
    windows = (253 + c - 1) // c
    acc = IDENTITY
    for w in range(windows - 1, -1, -1):
        for _ in range(c):
            acc = pt_double(acc)
        buckets = [None] * (mask + 1)
        shift = w * c
        for s, p in pairs:
            idx = (s >> shift) & mask
            if idx:
                buckets[idx] = p if buckets[idx] is None else pt_add(buckets[idx], p)
        running = IDENTITY
        total = IDENTITY
        for idx in range(mask, 0, -1):
            if buckets[idx] is not None:
                running = pt_add(running, buckets[idx])
            total = pt_add(total, running)
        acc = pt_add(acc, total)
    return acc


def is_identity(pt):
    return pt_eq(pt, IDENTITY)


# Generators (§9.1): B the basepoint, B̃ = from_uniform(SHA3-512(enc(B))).
ENC_B = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
PT_B = dec(ENC_B)
PT_BT = from_uniform(hashlib.sha3_512(ENC_B).digest())


def commit(v, gamma):
    """C(v, γ) = v·B + γ·B̃ (§1, §9.1)."""
    return msm([v, gamma], [PT_B, PT_BT])


_GEN_CACHE = {}


def generator_chain(letter: str, j: int, count: int):
    """§9.3: X_{j,i} = from_uniform(64-byte block i of SHAKE256("GeneratorsChain"||X||LE32(j)))."""
    key = (letter, j)
    have = _GEN_CACHE.get(key, [])
    if len(have) < count:
        stream = hashlib.shake_256(b"GeneratorsChain" + letter.encode() + j.to_bytes(4, "little")
                                   ).digest(64 * count)
        have = have + [from_uniform(stream[64 * i:64 * i + 64]) for i in range(len(have), count)]
        _GEN_CACHE[key] = have
    return have[:count]


def flat_generators(letter, n, m):
    """§9.3: X_k = X_{⌊k/n⌋, k mod n}, k < n·m."""
    out = []
    for j in range(m):
        out.extend(generator_chain(letter, j, n))
    return out


# ---------------------------------------------------------------------------------------------
# Strict CBOR (escx-format.md §1.1): shortest forms, definite lengths, no tags, no floats,
# simple values false/true/null only, text map keys each once, no trailing bytes.
# Maps decode to dicts (insertion order = encoded order), so key order can be checked.
# ---------------------------------------------------------------------------------------------
class CborError(Exception):
    pass


def cbor_decode(data: bytes):
    def arg(pos, info):
        if info < 24:
            return info, pos
        size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if size is None or pos + size > len(data):
            raise CborError("bad argument")
        val = int.from_bytes(data[pos:pos + size], "big")
        minimum = {1: 24, 2: 256, 4: 65536, 8: 1 << 32}[size]
        if val < minimum:
            raise CborError("non-shortest integer or length")
        return val, pos + size

    def item(pos, depth):
        if depth > 64 or pos >= len(data):
            raise CborError("truncated")
        ib = data[pos]
        major, info = ib >> 5, ib & 31
        pos += 1
        if major == 7:
            if info == 20:
                return False, pos
            if info == 21:
                return True, pos
            if info == 22:
                return None, pos
            raise CborError("float or simple value")
        if major == 6:
            raise CborError("tag")
        n, pos = arg(pos, info)
        if major == 0:
            return n, pos
        if major == 1:
            return -1 - n, pos
        if major in (2, 3):
            if pos + n > len(data):
                raise CborError("truncated string")
            raw = bytes(data[pos:pos + n])
            if major == 3:
                try:
                    return raw.decode("utf-8"), pos + n
                except UnicodeDecodeError:
                    raise CborError("bad UTF-8")
            return raw, pos + n
        if major == 4:
            out = []
            for _ in range(n):
                v, pos = item(pos, depth + 1)
                out.append(v)
            return out, pos
        if major == 5:
            out = {}
            for _ in range(n):
                k, pos = item(pos, depth + 1)
                if not isinstance(k, str) or k in out:
                    raise CborError("map key not text, or repeated")
                out[k], pos = item(pos, depth + 1)
            return out, pos
        raise CborError("bad major type")

    v, end = item(0, 0)
    if end != len(data):
        raise CborError("trailing bytes")
    return v


def cbor_encode(v) -> bytes:
    """Canonical encoding (escx-format.md §1.1), dict order preserved."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for size, info in ((1, 24), (2, 25), (4, 26), (8, 27)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | info]) + n.to_bytes(size, "big")
        raise ValueError("integer too large")

    if v is False:
        return b"\xf4"
    if v is True:
        return b"\xf5"
    if v is None:
        return b"\xf6"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor_encode(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor_encode(k) + cbor_encode(x) for k, x in v.items())
    raise TypeError(type(v))


def shape(obj, keys, code, what, optional=()):
    """A map with exactly `keys` in this order (optional ones may be absent), else `code`."""
    if not isinstance(obj, dict):
        raise Fail(code, f"{what}: not a map")
    want = [k for k in keys if k in obj or k not in optional]
    if list(obj.keys()) != want:
        raise Fail(code, f"{what}: keys {list(obj.keys())}, expected {want}")
    return obj


def is_uint(x, bits=64):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < (1 << bits)


def is_bytes(x, n=None):
    return isinstance(x, bytes) and (n is None or len(x) == n)
