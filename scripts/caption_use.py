#!/usr/bin/env python3
"""Does a judgment use the caption the model wrote? (understanding items of an msrl-train evaluation)

    scripts/caption_use.py RUN/eval/report_completions.jsonl DATA/eval.jsonl

For every sampled judgment of an image or video understanding item, the two responses differ in
one word: the true value (in the correct response) and the wrong one. The script classifies the
model's own `<caption>` (holds the true value only / the wrong value only / neither or both), the
value its rationale quotes first ("The text says X": true / wrong / another word / none) and its
`<answer>`, and prints the counts and the conditional rates: how often the rationale repeats the
caption's value, and how often the answer follows the rationale's value.
"""
import collections
import json
import re
import sys


def differing_values(user, solution):
    a = re.search(r"Response A: (.*)\.", user).group(1).split()
    b = re.search(r"Response B: (.*)\.", user).group(1).split()
    if len(a) != len(b):
        raise ValueError("responses of different length: %r / %r" % (a, b))
    k = next(i for i in range(len(a)) if a[i] != b[i])
    return (a[k], b[k]) if solution == "A" else (b[k], a[k])


def classify(words, truth, wrong):
    if truth in words and wrong not in words:
        return "true"
    if wrong in words and truth not in words:
        return "wrong"
    return "neither"


def norm(text):
    return " ".join(text.replace(".", " ").split())


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    rows = {}
    with open(argv[2]) as f:
        for line in f:
            r = json.loads(line)
            rows[(r["id"], r.get("order", ""))] = r
    caption, quote, answer = collections.Counter(), collections.Counter(), collections.Counter()
    exact = collections.defaultdict(collections.Counter)
    steps = collections.Counter()
    template = re.compile(r"The \w+ (?:says|shows) (\w+)\. Response A says (\w+), which (\w+)\. Response B says (\w+), which (\w+)\. "
                          r"Response ([AB]) is correct\.</think><answer>\s*([AB])\s*</answer>")
    with open(argv[1]) as f:
        for line in f:
            c = json.loads(line)
            r = rows[(c["id"], c.get("order", ""))]
            for text in c["completions"]:
                cap = re.search(r"<caption>(.*?)</caption>", text)
                ans = re.search(r"<answer>\s*([AB])\s*</answer>", text)
                key = "equal" if cap and norm(cap.group(1)) == norm(r.get("caption", "")) else "other"
                exact[r["task_type"]][key] += 1
                exact[r["task_type"]][key + " right"] += bool(ans and ans.group(1) == r["solution"])
            if not (r["task_type"].endswith("understanding") or r["task_type"] == "text"):
                continue
            truth, wrong = differing_values(r["messages"][-1]["content"], r["solution"])
            va, vb = (truth, wrong) if r["solution"] == "A" else (wrong, truth)
            for text in c["completions"]:
                m = template.search(text)
                steps["judgments"] += 1
                if not m:
                    continue
                q, a, wa, b, wb, concl, ans = m.groups()
                steps["template"] += 1
                if q != truth:
                    continue
                steps["quote true"] += 1
                steps["A copied right"] += a == va
                steps["B copied right"] += b == vb
                steps["A verdict contradicts"] += wa != ("matches" if a == q else "differs")
                steps["B verdict contradicts"] += wb != ("matches" if b == q else "differs")
                follows = "A" if (wa, wb) == ("matches", "differs") else "B" if (wa, wb) == ("differs", "matches") else "?"
                steps["conclusion follows verdicts"] += concl == follows
                steps["answer = conclusion"] += ans == concl
                steps["answer right"] += ans == r["solution"]
            if not r["task_type"].endswith("understanding"):
                continue
            for text in c["completions"]:
                cap = re.search(r"<caption>(.*?)</caption>", text)
                said = re.search(r"The \w+ (?:says|shows) (\w+)", text)
                ans = re.search(r"<answer>\s*([AB])\s*</answer>", text)
                cv = classify(cap.group(1).split() if cap else [], truth, wrong)
                qv = "none" if not said else {truth: "true", wrong: "wrong"}.get(said.group(1), "other")
                caption[cv] += 1
                quote[(cv, qv)] += 1
                if ans and qv in ("true", "wrong"):
                    answer[(qv, ans.group(1) == r["solution"])] += 1
    n = sum(caption.values())
    print("judgments of understanding items: %d" % n)
    for cv in ("true", "wrong", "neither"):
        row = {qv: quote[(cv, qv)] for qv in ("true", "wrong", "other", "none")}
        print("caption holds %-7s %5d (%4.1f %%)  rationale quotes: %s" % (cv, caption[cv], 100.0 * caption[cv] / max(n, 1), row))
    for cv in ("true", "wrong"):
        same, other = quote[(cv, cv)], quote[(cv, "wrong" if cv == "true" else "true")]
        print("caption %-5s -> rationale repeats its value in %.1f %% of %d" % (cv, 100.0 * same / max(same + other, 1), same + other))
    for qv in ("true", "wrong"):
        right, wrong_ = answer[(qv, True)], answer[(qv, False)]
        follows = right if qv == "true" else wrong_
        print("rationale quotes %-5s -> answer follows it in %.1f %% of %d" % (qv, 100.0 * follows / max(right + wrong_, 1), right + wrong_))
    for task in sorted(exact):
        e = exact[task]
        m = e["equal"] + e["other"]
        print("%-19s caption equal to the reference in %5.1f %% of %d; answer right: %5.1f %% with it, %5.1f %% with another" % (
            task, 100.0 * e["equal"] / max(m, 1), m, 100.0 * e["equal right"] / max(e["equal"], 1), 100.0 * e["other right"] / max(e["other"], 1)))
    print("understanding and text judgments: %d, in the full template %d, quoting the true value %d; of those:" % (
        steps["judgments"], steps["template"], steps["quote true"]))
    for k in ("A copied right", "B copied right", "A verdict contradicts", "B verdict contradicts", "conclusion follows verdicts",
              "answer = conclusion", "answer right"):
        print("  %-28s %5d (%5.1f %%)" % (k, steps[k], 100.0 * steps[k] / max(steps["quote true"], 1)))


if __name__ == "__main__":
    main(sys.argv)
