"""Known answers (proofs.md §9.8) and the vectors' expected.json files, one line per case."""
import hashlib
import json
import os
import time

from .primitives import *  # noqa: F401,F403
from .proof_systems import *  # noqa: F401,F403
from .escx import *  # noqa: F401,F403

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PROOFS_DIR = os.path.join(ROOT, "test-vectors", "proofs")
METER_DIR = os.path.join(ROOT, "test-vectors", "metering")


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
RESULTS = {"PASS": 0, "FAIL": 0, "SKIP": 0}


def report(name, expected, got, status=None, note=""):
    if status is None:
        status = "PASS" if expected == got else "FAIL"
    RESULTS[status] += 1
    print(f"{status:4}  {name:58} expected {expected:26} got {got:26} {note}")


def run(fn, *a):
    """Verdict of fn: ('ok', detail) or (code, why)."""
    try:
        return "ok", fn(*a)
    except Fail as e:
        return e.code, e.why


# ---------------------------------------------------------------------------------------------
# §9.8 and §9.1–§9.3 known answers
# ---------------------------------------------------------------------------------------------
def hx(x):
    return x.hex()


def known_answers():
    ka = []

    def check(name, got, want):
        report(f"known answer: {name}", want[:24], got[:24], "PASS" if got == want else "FAIL")

    check("§9.2 SHA3-256('') on our Keccak-f", hx(sha3_256_own(b"")),
          "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
    t = Transcript("test protocol")
    t.append_message("some label", "some data")
    check("§9.2 Merlin simple", hx(t.challenge_bytes("challenge", 32)),
          "d5a21972d0d5fe320c0d263fac7fffb8145aa640af6e9bca177c03c7efcf0615")
    t = Transcript("test protocol")
    t.append_message("step1", "some data")
    for _ in range(32):
        c = t.challenge_bytes("challenge", 32)
        t.append_message("bigdata", b"\x63" * 1024)
        t.append_message("challengedata", c)
    check("§9.2 Merlin 32 rounds", hx(c),
          "a8c933f54fae76e3f9bea93648c1308e7dfa2152dd51674ff3ca438351cf003c")
    check("§9.1 enc(B)", hx(enc(PT_B)), hx(ENC_B))
    check("§9.1 enc(B̃)", hx(enc(PT_BT)),
          "8c9240b456a9e6dc65c377a1048d745f94a08cdb7f44cbcd7b46f34048871134")
    for (lt, j, i, want) in [
            ("G", 0, 0, "fc3b25801422672a6a8d3adb5d8457d4301fe92324b4fc56ae934c8713ddfe2d"),
            ("H", 0, 0, "ba698f6dd08c501e32b55d2ee7259f6019d629fa2ba4d7039c5de157cba4df73"),
            ("G", 0, 63, "2878518757fc0f2ae3b991b499f9fdcd1a2d483b663c128b9183556a7155732b"),
            ("H", 0, 63, "1626c3a94a56343cf2916ba68e2e4a49b280a29dc73264473e342cc3df4e8263"),
            ("G", 1, 0, "0eeebec183d151ded1e24320cf43c987617b36e77114788e5ae8ace41570b74b"),
            ("H", 1, 0, "c4d0c6aa6c07db20798b35906c8a8940fa8a1e2f6bf699ee13aaf3eb1f636d24")]:
        check(f"§9.8 {lt}_{{{j},{i}}}", hx(enc(generator_chain(lt, j, i + 1)[i])), want)

    # §9.8 Bulletproofs+: statement-1.proofs, entry 0
    pk = read_public_key(os.path.join(PROOFS_DIR, "operator.pub"))
    check("§9.8 operator key id", hx(key_id(pk)), "793457ea44c83411763e0b425c0eadc6")
    st = verify_statement(open(os.path.join(PROOFS_DIR, "statements/statement-1.cbor"), "rb").read(),
                          {key_id(pk)})
    check("§9.8 statement hash", hx(st.hash),
          "864ead07179ae997e7535a5b6e0be02b2ff18255c1745c442083df8e7b3843ec")
    f = read_statement_proofs(open(os.path.join(PROOFS_DIR, "statement-1.proofs"), "rb").read())
    pr = f["entries"][0]["proof"]
    e0 = st.entries[0]
    check("§9.8 BP+ V_0", hx(e0["payouts"][0]["commitment"]),
          "9ae1428597d8a556b51650ea6e997357554c1f50331ea25489229f540b91090f")
    check("§9.8 BP+ V_1", hx(e0["payouts"][1]["commitment"]),
          "44a50e962369d94c198df2fff30847220114e2257f8ec1046510b276ccede758")
    check("§9.8 BP+ length", str(len(pr)), "641")
    for name, off, want in [
            ("degree", 0, "01"),
            ("δ′", 1, "0c77a048dc0f7cc0227076955c100cc3a3697b6622c3537815706bb0c549d409"),
            ("A", 33, "86535c42e98b75d51e7688fbbb9f5b70182dbc803961f344b4c68e112cba5e57"),
            ("A′", 65, "34c87a4cacc068305ba302e40f7a4a3c9241f0855ee60ab2f1bd64453750083b"),
            ("B′", 97, "f8ea0b4484907655341ec97dfc00bd2c0f8c47f414606ec5ab0f7c0615e44912"),
            ("r′", 129, "b3cc730313efdf8b1789e201721113ce59c95736ed49acbd512505375d76af0b"),
            ("s′", 161, "859cbfff23071c3d6f7b2c560916d5206f7f20ad9ee92ac450593589a9f3c30e"),
            ("L_1", 193, "a84eb126e43accdcf866a8848a678b5aaaa8de9d9a3c1e0f6a63efb895eacf6f"),
            ("R_1", 225, "b8c6a7e3f430f8febd661a7eebecc462738b805b80f577c83585251a36c02324"),
            ("L_7", 577, "8c2daca30865cfcbc3a480345b11c2134faf63e419922f47a00f317cf574aa2a"),
            ("R_7", 609, "9ccc47858915a666814414e44c4ab609cd0f40db4b46decc7fe8ee169ea8081e")]:
        check(f"§9.8 BP+ {name} @{off}", hx(pr[off:off + len(want) // 2]), want)
    tr = {}
    ok = bpplus_verify(statement_transcript("escx statement range v1", f["operator"], f["statement"], 0),
                       [po["commitment"] for po in e0["payouts"]], 64, pr, tr)
    check("§9.8 BP+ entry 0 verifies", str(ok), "True")
    chal = [("y", tr["y"], "1faa3833c8aa37a4f52e93fd86c2ed59fe592cdf59bd7767b5a316205f065009"),
            ("z", tr["z"], "b1ab4f5ff39d853d037fd5523fa75241be9a6cdc1deefbb5efde01b4c351c10b")]
    for i, want in enumerate([
            "798410ceb8fa9239014d9779f3b044cd3524bb9aea365d5e5ccb79a529a35601",
            "5107cbb9c1facd557c67b8a22533401f4c5ba3b65ce3c57526af1f8b6415000c",
            "c54f516d707fc6685aa63280a3a577293300050481c4ed254dc97a722fa5860b",
            "a0f97e9e78e7d1e604006e63be3abba16ca771c10c613269eb27b4d27b4b9100",
            "96f7ac1ed7bad1b518459b9e6a501de916920c8f42b0313fb178cc78b47b6f02",
            "34aa9fdd911481c7e790cc39b1e6ef422eb7c5d060cdb4c6f36408d9fe6e8307",
            "c458f648b67c1729dc6dbbde87af6548ac7f5add51647be07f1d7baa2991b904"]):
        chal.append((f"e_{i + 1}", tr["es"][i], want))
    chal.append(("e", tr["e"], "1edc75a6917c3eaf10897c720dd175bfb424c9078bf8d854f328209e4c037905"))
    for name, val, want in chal:
        check(f"§9.8 BP+ challenge {name}", hx(sc_bytes(val)), want)

    # §9.8 Bulletproofs: threshold.proof; Schnorr: revenue.proof
    stf = [os.path.join(PROOFS_DIR, f"statements/statement-{i}.cbor") for i in (1, 2, 3)]
    tr = {}
    verify_revenue(open(os.path.join(PROOFS_DIR, "threshold.proof"), "rb").read(), stf, pk, tr)
    check("§9.8 BP C_sum", hx(enc(tr["c_sum"])),
          "feffe1496079592efea6348e0608a139e0b4bfb851fbed9178f5b6dcc701d141")
    check("§9.8 BP V", hx(enc(tr["V"])),
          "4ece655c42b7b70af22e600eb8c239f2664feb3f34206700d7704cf9ce4a7c72")
    bpb = read_revenue_proof(open(os.path.join(PROOFS_DIR, "threshold.proof"), "rb").read())["proof"]
    for name, off, want in [
            ("A", 0, "a65d3bc5854146afb6e64dcac4397e0b942a9d2823643f0c5c2c8e38ca959a7b"),
            ("t_x", 128, "941c2cc040c45745a611fd6a16627a2c2a06a03d90a777412d381fa20197d10d"),
            ("ẽ", 192, "2f270a311fbe5039cb38ac8e02ad78fde5294d16f2e696e4fb0926b74a924b02"),
            ("L_1", 224, "b8dde4ef0101e2d8abdde15d213938d25f39412814aa1bd0fa823ab06ebee75b"),
            ("R_1", 256, "305c5896e780619dc530373e1a0798c1ea7115ee0d4c47043078ebc89cc6d810"),
            ("a", 608, "5d90aaf1ab1c504c6047a8cef64b5e9839c37423b5c6e6f0067c448856c24200"),
            ("b", 640, "5a1a1de3b25044e45c84a75ca7522472327a43833a55c7c31d8fe5a9dacaae06")]:
        check(f"§9.8 BP {name} @{off}", hx(bpb[off:off + 32]), want)
    chal = [("y", tr["y"], "1fea99b4a5c0cee44aab91afdd8ec14c7985cc097a47f04ff54de0926387450b"),
            ("z", tr["z"], "37a050e6a0179a31d1c1a7593e66f9f33d9d7c6e3ad6a6acb7b96c386c217200"),
            ("x", tr["x"], "be803948e76ba256cec085dcff0432b825dd6c6f12e6f7cc18ffa5e781dc0a02"),
            ("w", tr["w"], "44427c41b767a025a2d283b966dbc1b626c941f6f0c3f447b9232f257d221705")]
    for i, want in enumerate([
            "bf3039aec254dd1c86bcd5eb3fd42680f6f4ec62fb1a04fbf6f125f3d8520108",
            "6f161958273f97954661e552c3786f44600be3ce1ad7519403615ee44314d804",
            "9a36d243b21e127cf9ad4e44e640b548bd2e6387e5a31c496a4b273f59ef5a08",
            "89865e2775a79f8954fb1493565b2ea580fcc6a0fe61d00a5d04f3bd0858370a",
            "0036ff9a9187b3e34ab365710bac22ef363e1068707903a999bc45535fc9e50a",
            "77104cc72640aafd760b413c99d265ddef8998781ea40246197f344ffa008209"]):
        chal.append((f"u_{i + 1}", tr["us"][i], want))
    for name, val, want in chal:
        check(f"§9.8 BP challenge {name}", hx(sc_bytes(val)), want)
    tr = {}
    verify_revenue(open(os.path.join(PROOFS_DIR, "revenue.proof"), "rb").read(), stf, pk, tr)
    check("§9.8 Schnorr C_sum", hx(enc(tr["c_sum"])),
          "feffe1496079592efea6348e0608a139e0b4bfb851fbed9178f5b6dcc701d141")
    check("§9.8 Schnorr c", hx(sc_bytes(tr["c"])),
          "20aff59614ac9d1ff3617c79ccc7ee848b61dffa16d57f7bb6c56e4bc2d9f306")
    # The MSM against plain double-and-add, and a tampered proof must fail.
    pts = [generator_chain("G", 0, 5)[i] for i in range(5)]
    ks = [wide(hashlib.sha512(bytes([i])).digest()) for i in range(5)]
    naive = IDENTITY
    for k, q in zip(ks, pts):
        naive = pt_add(naive, scalar_mul(k, q))
    check("self-test: MSM = Σ k·P", str(pt_eq(naive, msm(ks, pts))), "True")
    bad = bytearray(pr)
    bad[130] ^= 1   # r′ changed
    ok = bpplus_verify(statement_transcript("escx statement range v1", f["operator"], f["statement"], 0),
                       [po["commitment"] for po in e0["payouts"]], 64, bytes(bad))
    check("self-test: BP+ with r′ changed fails", str(ok), "False")


# ---------------------------------------------------------------------------------------------
# test-vectors/proofs/expected.json
# ---------------------------------------------------------------------------------------------
def proof_cases():
    exp = json.load(open(os.path.join(PROOFS_DIR, "expected.json")))
    pk = read_public_key(os.path.join(PROOFS_DIR, exp["operator"]))
    k0 = key_id(pk)
    for case in exp["statement_proofs"]:
        name = f"§2 {case['proofs']} vs {case['statement']}"

        def one():
            st = verify_statement(open(os.path.join(PROOFS_DIR, case["statement"]), "rb").read(), {k0})
            return verify_statement_proofs(open(os.path.join(PROOFS_DIR, case["proofs"]), "rb").read(), st)
        got, why = run(one)
        report(name, case["expect"], got, note=f"({why})")
    for case in exp["revenue"]:
        sts = [os.path.join(PROOFS_DIR, s) for s in case["statements"]]
        name = f"§3 {case['proof']} over {','.join(s.split('-')[-1][0] for s in case['statements'])}"
        got, res = run(verify_revenue, open(os.path.join(PROOFS_DIR, case["proof"]), "rb").read(), sts, pk)
        note = res if got != "ok" else res[0]
        if got == "ok":
            want_amt = case.get("total_micros", case.get("at_least_micros"))
            if want_amt is not None and res[1] != want_amt:
                got = f"ok but amount {res[1]}"
        report(name, case["expect"], got, note=f"({note})")


# ---------------------------------------------------------------------------------------------
# test-vectors/metering/expected.json: range proofs (metering.md §3.4, §6.1 step 6, §5)
# ---------------------------------------------------------------------------------------------
def metering_cases():
    exp = json.load(open(os.path.join(METER_DIR, "expected.json")))
    # Blinding known answers (metering.md §2.2), which the range proofs' commitments rest on.
    for b in exp["blindings"] + exp["report_blindings"]:
        mat = bytes.fromhex(b["secret"]) + bytes.fromhex(b["license_id"]) + \
            b["hour"].to_bytes(8, "big") + bytes([b["minute"]])
        if "nonce" in b:
            ctx, mat = "escx v2 meter report blinding", mat + bytes.fromhex(b["nonce"])
        else:
            ctx = "escx v1 meter blinding"
        r = wide(derive_key(ctx, mat + b["unit"].encode(), 64))
        okb = sc_bytes(r).hex() == b["blinding"] and enc(commit(b["value"], r)).hex() == b["commitment"]
        report(f"metering §2.2 blinding {ctx[5:7]} {b['unit']} m{b['minute']}", "ok",
               "ok" if okb else "mismatch")
    for name, want in exp["report_hashes"].items():
        env = cbor_decode(open(os.path.join(METER_DIR, name), "rb").read())["report"]
        report(f"metering §3.1 report hash {name}", want[:16],
               derive_key("escx v1 meter report hash", env).hex()[:16])

    # Ingest: §6.1 step 6 precedes every §6.2 store check, so any outcome of §6.2 (stored,
    # duplicate, equivocation, out of order, too early/late) implies the proofs verified.
    store_outcomes = {"stored", "duplicate", "equivocation", "report-out-of-order",
                      "report-too-early", "report-too-late", "period-closed"}
    cases = [(c["file"], c["expect"]) for c in exp["ingest"]] + \
            [(c["ingest"], c["expect"]) for c in exp["closes"] if "ingest" in c]
    seen = set()
    stored = {}
    for fname, outcome in cases:
        if outcome == "stored":
            stored[fname] = read_report(open(os.path.join(METER_DIR, fname), "rb").read())
        if fname in seen:
            continue
        seen.add(fname)

        def one():
            p = read_report(open(os.path.join(METER_DIR, fname), "rb").read())
            return verify_report_ranges(p)
        got, why = run(one)
        if outcome in store_outcomes:
            report(f"metering §6.1 {fname} ({outcome})", "ok", got, note=f"({why})")
        elif outcome in ("report-range-invalid", "report-invalid"):
            report(f"metering §6.1 {fname}", outcome, got, note=f"({why})")
        else:
            report(f"metering §6.1 {fname}", outcome, got, "SKIP",
                   f"(needs the ML-DSA signature check, not done; range proofs: {why})")

    # Openings (§5): a minute of `minutes` is checked against the per-minute proof first.
    for c in exp["openings"]:
        o = cbor_decode(open(os.path.join(METER_DIR, c["file"]), "rb").read())
        p = next((q for q in stored.values()
                  if q["license_id"] == o["license_id"] and q["hour"] == o["hour"]), None)

        def one():
            if p is None:
                raise Fail("meter-not-found", "no stored report of that hour")
            if o["package"] != p["package"]:
                raise Fail("opening-mismatch", "package")
            if o["minute"] is not None and any(x["unit"] == "minutes" for x in o["openings"]):
                if not verify_minutes_range(p):
                    raise Fail("report-range-invalid", "minutes_range does not verify")
            values = {}
            for x in o["openings"]:
                s = next((s for s in p["series"] if s["unit"] == x["unit"]), None)
                if s is None:
                    raise Fail("opening-mismatch", f"no unit {x['unit']}")
                target = dec(s["commitments"][o["minute"]]) if o["minute"] is not None else s["_sum"]
                if not pt_eq(commit(x["value"], sc(x["blinding"])), target):
                    raise Fail("opening-mismatch", x["unit"])
                values[x["unit"]] = x["value"]
            if "values" in c and values != c["values"]:
                raise Fail("values", str(values))
            mr = " (minutes_range verified)" if o["minute"] is not None and "minutes" in values else ""
            return f"{values}{mr}"
        got, why = run(one)
        report(f"metering §5 {c['file']}", c["expect"], got, note=f"({why})")
    for c in exp["closes"]:
        if "file" in c:
            report(f"metering §7.1 {c['file']} at {c['now']}", c["expect"], "-", "SKIP",
                   "(close rules: no range proof involved)")


def main():
    t0 = time.time()
    print("== known answers (proofs.md §9.1–§9.3, §9.8)")
    known_answers()
    print("== test-vectors/proofs/expected.json (proofs.md §2, §3); statement signatures NOT checked")
    proof_cases()
    print("== test-vectors/metering/expected.json (metering.md §3.4, §5, §6.1 step 6); "
          "signatures NOT checked")
    metering_cases()
    print(f"== {RESULTS['PASS']} pass, {RESULTS['FAIL']} fail, {RESULTS['SKIP']} skipped, "
          f"{time.time() - t0:.1f} s")
    return 1 if RESULTS["FAIL"] else 0

