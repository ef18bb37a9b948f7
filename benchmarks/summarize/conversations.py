"""Research-assistant conversations with planted facts, generated from varied templates.

Each conversation has 30-60 user turns. Some turns state a fact (a project code name, a
deadline, a supervisor, a batch size, a bucket, a contact address, ...) in one of several
wordings; the rest are ordinary questions about research topics answered at varied length.
Every fact has questions worded differently from its statements, and accepted answers
(normalized) for scoring. A seed picks everything, so held-back conversations come from other
seeds: nothing here is tuned to one conversation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

__all__ = ["KINDS", "Conversation", "Fact", "answer_ok", "generate", "normalize"]


@dataclass(frozen=True)
class Kind:
    """A kind of fact: values, how the user states it, how it is asked, how it is acked."""

    name: str
    values: tuple[str, ...]
    statements: tuple[str, ...]
    questions: tuple[str, ...]


KINDS: tuple[Kind, ...] = (
    Kind("codename", ("Bluefin", "Kestrel", "Marigold", "Obsidian", "Tamarack", "Halcyon",
                      "Juniper", "Quasar", "Saffron", "Cobalt"),
         ("Our project is code-named {v}.",
          "Internally we call this project {v}, by the way.",
          "Just so you know, the code name for this work is {v}.",
          "The project goes by the name {v} in our team."),
         ("What's the code name of our project?",
          "Remind me, what do we call the project internally?",
          "Under which name does our team know this project?")),
    Kind("deadline", ("March 14", "June 3", "October 21", "January 9", "August 30",
                      "November 17", "April 26", "September 12"),
         ("The deadline for the paper is {v}.",
          "We have to submit everything by {v}.",
          "Our hard cutoff is {v}, no extensions.",
          "Everything is due on {v}, so plan for that."),
         ("When is our submission due?",
          "By what date do we need to hand everything in?",
          "What was the cutoff date again?")),
    Kind("supervisor", ("Marta Kowalski", "Tomas Varga", "Priya Raman", "Kenji Watanabe",
                        "Amara Okafor", "Lucas Moreau", "Ines Carvalho", "Omar Haddad"),
         ("My supervisor is {v}.",
          "I report to {v} on this project.",
          "{v} is the one who leads our group.",
          "For context, my advisor is {v}."),
         ("Who do I report to?",
          "What's the name of the person who leads my group?",
          "Who's my supervisor again?")),
    Kind("batch", ("48", "96", "192", "384", "640", "768", "112", "224"),
         ("We train with a batch size of {v}.",
          "I set the batch size to {v} for all runs.",
          "Each training step uses {v} examples per batch."),
         ("What batch size are we using?",
          "How many examples go into one training batch?",
          "Remind me of the batch size for our runs.")),
    Kind("bucket", ("gs-ml-kestrel-7", "s3-lab-archive-22", "gs-vision-raw-9",
                    "s3-genomics-041", "gs-climate-runs-5", "s3-nlp-corpus-13"),
         ("Our data lives in the bucket {v}.",
          "Everything is stored under the storage bucket {v}.",
          "Upload the results to {v}, that's our bucket."),
         ("Which storage bucket holds our data?",
          "Where should I put the results, which bucket?",
          "What is the name of our bucket?")),
    Kind("email", ("m.kowal@uni-lab.org", "help@hpc-center.edu", "ops-desk@nordlab.io",
                   "cluster-admin@geo-inst.net", "support@bio-compute.ac"),
         ("If something breaks, write to {v}.",
          "The support contact for the cluster is {v}.",
          "Questions about access go to {v}."),
         ("Which address do I email when the cluster has problems?",
          "Who should I write to about cluster access, what's the email?",
          "What's the support email for the cluster?")),
    Kind("partition", ("gpu-a100", "bigmem", "debug-short", "h100-long", "cpu-epyc",
                       "gpu-l40s"),
         ("We submit our jobs to the {v} partition.",
          "Our allocation is on the {v} queue.",
          "Use the {v} partition for everything we run."),
         ("Which partition do our jobs go to?",
          "On which queue is our allocation?",
          "Where do I submit the jobs, which partition?")),
    Kind("meeting", ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
         ("Our group meets every {v}.",
          "The weekly sync is on {v}.",
          "We have our team meeting each {v} morning."),
         ("What day is the weekly team meeting?",
          "When does our group get together each week?",
          "On which weekday do we have the sync?")),
    Kind("budget", ("42,000", "18,500", "75,000", "120,000", "9,800", "33,250"),
         ("Our compute budget this year is {v} dollars.",
          "We can spend at most {v} dollars on compute.",
          "The grant gives us {v} dollars for cloud and cluster time."),
         ("How much money do we have for compute?",
          "What's our spending limit for compute?",
          "How big is the compute budget?")),
    Kind("city", ("Lisbon", "Oslo", "Kyoto", "Montreal", "Nairobi", "Valparaiso",
                  "Tallinn"),
         ("The workshop will be held in {v}.",
          "We're presenting in {v} this year.",
          "This year's conference is in {v}."),
         ("Where is the workshop taking place?",
          "In which city do we present?",
          "What city is the conference in?")),
    Kind("seed", ("1234", "2718", "31337", "4242", "8675", "1618"),
         ("We always fix the random seed to {v}.",
          "All experiments use seed {v} for reproducibility."),
         ("Which seed do we use for our experiments?",
          "What random seed did we settle on?")),
    Kind("port", ("8431", "9127", "7713", "6060", "5005"),
         ("Our inference server listens on port {v}.",
          "The model server runs on port {v}."),
         ("What port does the inference server use?",
          "On which port is the model server?")),
    Kind("dataset", ("CoralNet-v2", "UrbanSound-8K", "PolyGlot-140", "MedScan-3",
                     "TerraTiles-12"),
         ("The dataset we're using is called {v}.",
          "We work with the {v} dataset."),
         ("What's the name of our dataset?",
          "Which dataset are we working with?")),
)

_ACKS = ("Got it.", "Noted, I'll keep that in mind.", "Understood.", "Thanks, noted.",
         "Okay, good to know.")
_ECHO = ("Noted: {v}.", "Got it, {v}.", "Understood, {v}.")

TOPICS = ("gradient checkpointing", "mixed precision training", "learning rate warmup",
          "data augmentation", "attention mechanisms", "tokenizers", "cross validation",
          "Slurm job arrays", "checkpoint sharding", "early stopping", "label smoothing",
          "dropout", "beam search", "contrastive learning", "weight decay", "curriculum "
          "learning", "model distillation", "quantization", "batch normalization",
          "experiment tracking", "hyperparameter search", "evaluation metrics",
          "dataset versioning", "reproducible environments", "profiling GPU kernels")

_ASK = ("Can you explain how {t} works?", "What are common pitfalls with {t}?",
        "Give me a short overview of {t}.", "How would you compare {t} with {u}?",
        "Is {t} worth it for a small lab like ours?", "What should I read first about {t}?",
        "Why does {t} sometimes make results worse?", "How do I debug problems with {t}?")
_SAY = ("{T} is mostly about trading a little extra work for more stable results.",
        "In practice, {t} matters most when the model or the data is large.",
        "A common mistake with {t} is to tune it once and never check it again.",
        "Compared with {u}, {t} is easier to add but harder to reason about.",
        "Most papers report {t} settings only briefly, so expect to experiment.",
        "Start with the defaults of your framework for {t}, then change one thing at a time.",
        "For a small lab, {t} pays off if it saves GPU hours or a failed run.",
        "Logging what {t} does to the loss curve makes problems visible early.",
        "If results get worse with {t}, check the interaction with {u} first.",
        "The literature on {t} is large, but two or three survey papers cover the basics.",
        "Write down the exact settings of {t} next to every result, or you will not be able "
        "to reproduce it in a month.",
        "Small datasets make the effect of {t} noisy, so repeat each run a few times.",
        "Frameworks differ in their defaults for {t}; read the documentation of the version "
        "you actually run.",
        "When {t} and {u} are combined, the order in which they are applied matters.",
        "Measure the cost of {t} in wall-clock time, not only in steps, before you adopt it.",
        "A quick ablation, with and without {t}, usually tells you whether it helps here.",
        "Reviewers tend to ask about {t}, so keep a short justification ready.")


@dataclass
class Fact:
    """A planted fact: where it was stated, the question that asks for it, what counts."""

    kind: str
    value: str
    turn: int
    statement: str
    question: str
    accept: list[str]


@dataclass
class Conversation:
    """User/assistant turns (text pairs) and the facts planted in them."""

    seed: int
    turns: list[tuple[str, str]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)


def normalize(text: str) -> str:
    """Lower-case, digits joined across thousands separators, punctuation to spaces.

    Example:
        >>> normalize("It's 42,000 Dollars; gs-ml-7!")
        'it s 42000 dollars gs ml 7'
    """
    text = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text.lower())
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _accept(kind: str, value: str) -> list[str]:
    if kind == "deadline":
        month, day = value.split()
        return [f"{month} {day}", f"{day} {month}", f"{day}th {month}", f"{month} {day}th",
                f"{day}st {month}", f"{month} {day}st", f"{day}rd {month}", f"{month} {day}rd",
                f"{day}nd {month}", f"{month} {day}nd"]
    if kind == "supervisor":
        return [value.split()[-1]]
    if kind == "meeting":
        return [value]
    return [value]


def answer_ok(answer: str, accept: list[str]) -> bool:
    """Whether ``answer`` contains one of the accepted values (normalized, as whole words)."""
    text = f" {normalize(answer)} "
    return any(f" {normalize(a)} " in text for a in accept)


def _filler(rng: random.Random) -> tuple[str, str]:
    t, u = rng.sample(TOPICS, 2)
    ask = rng.choice(_ASK).format(t=t, u=u)
    n = rng.choice((3, 4, 5, 6, 7, 8))
    said = [s.format(t=t, u=u, T=t[0].upper() + t[1:]) for s in rng.sample(_SAY, n)]
    return ask, " ".join(said)


def generate(seed: int, *, facts: int = 8, min_turns: int = 30,
             max_turns: int = 60) -> Conversation:
    """One conversation: ``facts`` facts of distinct kinds stated in the first 60% of its
    turns, in random wordings, among filler exchanges; questions chosen per fact."""
    rng = random.Random(seed)
    n = rng.randint(min_turns, max_turns)
    kinds = rng.sample(KINDS, facts)
    slots = sorted(rng.sample(range(0, int(n * 0.6)), facts))
    conv = Conversation(seed)
    planted = dict(zip(slots, kinds, strict=True))
    for turn in range(n):
        kind = planted.get(turn)
        if kind is None:
            conv.turns.append(_filler(rng))
            continue
        value = rng.choice(kind.values)
        statement = rng.choice(kind.statements).format(v=value)
        if rng.random() < 0.5:  # a fact mentioned in passing, inside an ordinary question
            ask, reply = _filler(rng)
            statement = f"{statement} {ask}" if rng.random() < 0.5 else f"{ask} {statement}"
        else:
            reply = (rng.choice(_ECHO).format(v=value) if rng.random() < 0.5
                     else rng.choice(_ACKS))
        conv.turns.append((statement.strip(), reply))
        conv.facts.append(Fact(kind.name, value, turn, statement,
                               rng.choice(kind.questions), _accept(kind.name, value)))
    return conv
