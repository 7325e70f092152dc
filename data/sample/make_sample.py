"""Regenerate `support_tickets.csv`, the sample dataset that `make run` trains on.

The tickets were written for tuneloop. They are built so that the words alone do not give the
class away, which is what a fine-tuned transformer is for and a bag of words is not:

- every category's vocabulary appears in the others' tickets: a shipping ticket mentions the
  payment that went through, a billing ticket the app that works;
- many tickets name a second category's topic only to say it is fine, or negate it ("I was not
  charged twice, but ..."), or give it as the cause of the real problem ("since the app update,
  I was billed twice"), in either order;
- each problem has several paraphrases, so the test split holds wordings the training split
  rarely or never saw;
- subjects are often about the wrong topic or say nothing, as real subjects do;
- a few labels are wrong (label noise), so no model reaches a perfect score.

A handful of deliberately dirty rows is appended for the validation gate to quarantine. The
file is reproducible: `python data/sample/make_sample.py` writes the identical file.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

SEED = 7
PER_CLASS = 275
LABEL_NOISE = 0.04
# Shares of the ticket shapes (see compose()); the rest are plain single-problem tickets.
SHAPES = {"two_problems": 0.45, "contrast": 0.15, "cause": 0.1}

OPENERS = ["Hi,", "Hello,", "Hello team,", "Hi support,", "Good morning,", "Dear support,", "Hey,", "", "", "", ""]
CLOSINGS = ["Thanks.", "Thank you!", "Please help.", "Regards, Sam", "Cheers", "Best, Tom", "", "", "", ""]
NEUTRAL_SUBJECTS = ["Help", "Question", "Problem with my order", "Urgent", "Support request", "Issue", "Hello"]

# What goes wrong, per category: each problem in several wordings (paraphrases).
PROBLEMS: dict[str, list[list[str]]] = {
    "billing": [
        [
            "I was charged twice for the {plan}",
            "my card was billed two times this month",
            "there are two identical payments of ${amount} on my statement",
            "you took the same ${amount} from my account twice",
            "I see a duplicate transaction for my order",
        ],
        [
            "I am still waiting for the refund of ${amount} you promised",
            "the money for the cancelled order never came back to my card",
            "my refund has not shown up on my bank statement",
            "you said you would pay me back but nothing has arrived",
        ],
        [
            "the invoice says ${amount2} although the price was ${amount}",
            "I was billed more than the listed price",
            "the discount code was ignored and I paid the full price",
            "the amount on my receipt is higher than what the checkout showed",
        ],
        [
            "my card keeps getting declined although it works everywhere else",
            "the payment fails at the last step even though my bank approved it",
            "checkout refuses my credit card",
        ],
        [
            "I cancelled my {plan} in {month} and you are still taking money",
            "my subscription was supposed to end but I got billed again",
            "you renewed my plan without asking and charged ${amount}",
        ],
        [
            "the invoice is missing our VAT number",
            "I need a corrected invoice with our company address",
            "the receipt shows the wrong company name",
        ],
    ],
    "shipping": [
        [
            "my order #{order} still has not arrived after {days} days",
            "the package is {days} days late",
            "the delivery date keeps moving back",
            "I am still waiting for my parcel",
            "nothing has been delivered yet, and it was due last week",
        ],
        [
            "the courier marked it as delivered but nothing came",
            "tracking says delivered, yet there is no box at my door",
            "the parcel disappeared after it left the warehouse",
            "{carrier} claims they dropped it off, but I never got it",
        ],
        [
            "the box arrived crushed and the item inside is broken",
            "the item came smashed to pieces",
            "the package was soaked and the contents are ruined",
        ],
        [
            "I received the wrong item",
            "you sent me a blue case instead of the black one I ordered",
            "the box contained somebody else's order",
            "one of the {count} items is missing from the package",
        ],
        [
            "I need to change the delivery address for order #{order}",
            "the courier says my address is incomplete, but it is correct",
            "the parcel went to my old address",
        ],
        [
            "the tracking number does not work",
            "tracking has not updated for a week",
            "I cannot see where my parcel is",
        ],
    ],
    "account": [
        [
            "the password reset email never arrives",
            "I cannot reset my password",
            "the reset link says it has expired every time",
            "I forgot my password and the recovery does not work",
        ],
        [
            "my account is locked after too many attempts",
            "I am locked out of my profile",
            "the site says my account is suspended",
        ],
        [
            "I lost my phone and cannot get the login code",
            "the two-factor code is always rejected",
            "I no longer have the authenticator app for my login",
        ],
        [
            "I need to change the email address on my profile",
            "please update the e-mail linked to my account",
            "I want to log in with a new email address",
        ],
        [
            "someone logged into my account from another country",
            "I think my account was hacked",
            "there are logins on my profile that were not me",
        ],
        [
            "please delete my account and my personal data",
            "I want my profile removed completely",
            "how do I close my account for good",
        ],
    ],
    "technical": [
        [
            "the app crashes whenever I open it on my {device}",
            "the app closes itself right after startup",
            "the app freezes and I have to restart my {device}",
        ],
        [
            "sync stops halfway with error E{code}",
            "my data does not sync between my {device} and the website",
            "changes I make on the website never show up in the app",
        ],
        [
            "the dashboard takes forever to load",
            "every page needs more than {seconds} seconds to open",
            "the website is painfully slow since yesterday",
        ],
        [
            "saving a document gives me an error 500",
            "I get a server error whenever I click save",
            "the editor shows an error and loses my changes",
        ],
        [
            "the CSV export produces an empty file",
            "exporting my report fails without any message",
            "the download button does nothing",
        ],
        [
            "push notifications stopped arriving on my {device}",
            "the page is blank after the latest update",
            "uploads fail at 99 percent",
        ],
    ],
}

# The same topics said to be fine: a category's words in another category's ticket.
FINE: dict[str, list[str]] = {
    "billing": [
        "the payment went through fine",
        "my card was charged the right amount",
        "the invoice looks correct",
        "billing is all in order",
        "I paid and got the receipt",
        "the refund for my last order arrived",
    ],
    "shipping": [
        "the package arrived on time",
        "delivery was quick",
        "the parcel came in perfect condition",
        "shipping was no problem",
        "I got the box yesterday",
        "tracking shows it was delivered, and it was",
    ],
    "account": [
        "I can log in without trouble",
        "my account works",
        "logging in is fine",
        "my password works",
        "my profile is set up correctly",
        "the login code arrives as it should",
    ],
    "technical": [
        "the app runs smoothly",
        "the website works fine",
        "I see no errors on my side",
        "the app itself is fine",
        "everything loads quickly",
        "the update installed without problems",
    ],
}

# Something a category's topic did that set off another category's problem, in its own words.
CAUSES: dict[str, list[str]] = {
    "billing": ["since I updated my card details", "after I paid the invoice", "ever since my plan was renewed"],
    "shipping": ["since my parcel arrived", "after I changed the delivery address", "ever since the courier came"],
    "account": ["since I reset my password", "after I turned on the login code", "since I changed my email address"],
    "technical": ["since the latest app update", "after the website was down yesterday", "since I reinstalled the app"],
}

# Ways to mention a second problem that is not (or no longer) the one the ticket is about:
# {other} is another category's problem, {problem} the ticket's own.
TWO_PROBLEMS = [
    "{other} last week, but you already sorted that out. Now {problem}.",
    "{problem}. The earlier issue, that {other}, has been fixed.",
    "Thanks for helping when {other}. Unfortunately, {problem}.",
    "It is not that {other}. {problem}.",
    "{problem}, and no, it is not that {other}.",
    "I first thought {other}, but actually {problem}.",
    "{problem}. I am not writing because {other}, that was months ago.",
    "My colleague wrote to you because {other}; my own problem is that {problem}.",
]

SUBJECTS: dict[str, list[str]] = {
    "billing": ["Charged twice", "Refund", "Invoice question", "Payment problem", "Billing", "Subscription"],
    "shipping": ["Where is my order?", "Delivery", "Parcel", "Shipping problem", "Tracking", "Damaged item"],
    "account": ["Login problem", "Password", "My account", "Locked out", "Account access", "Profile"],
    "technical": ["App crashes", "Bug", "Error message", "Website slow", "Sync", "Technical issue"],
}

FILL = {
    "plan": ["Pro plan", "Team plan", "Basic plan", "annual plan"],
    "amount": ["9", "12", "19", "29", "49", "99"],
    "month": ["January", "March", "May", "August", "October"],
    "carrier": ["UPS", "DHL", "FedEx", "The courier"],
    "device": ["iPhone", "Android phone", "laptop", "iPad"],
}


def fill(template: str, rng: random.Random) -> str:
    """Fill a template's placeholders with plausible random values."""
    amount = rng.choice(FILL["amount"])
    return template.format(
        plan=rng.choice(FILL["plan"]),
        amount=amount,
        amount2=str(int(amount) + rng.choice([5, 10, 20])),
        month=rng.choice(FILL["month"]),
        carrier=rng.choice(FILL["carrier"]),
        device=rng.choice(FILL["device"]),
        order=rng.randint(10000, 99999),
        days=rng.randint(5, 20),
        count=rng.randint(2, 5),
        code=rng.randint(100, 999),
        seconds=rng.randint(10, 40),
    )


def sentence(text: str) -> str:
    """Capitalised, with a full stop."""
    return text[0].upper() + text[1:] + ("" if text.endswith(("?", ".", "!")) else ".")


def problem_of(category: str, rng: random.Random) -> str:
    """One of `category`'s problems, in one of its wordings."""
    return fill(rng.choice(rng.choice(PROBLEMS[category])), rng)


def compose(category: str, other: str, shape: str, rng: random.Random) -> str:
    """The core of a ticket's body: `category`'s problem, alone or beside `other`'s topic."""
    problem = problem_of(category, rng)
    if shape == "two_problems":
        text = rng.choice(TWO_PROBLEMS).format(problem=problem, other=problem_of(other, rng))
        return re.sub(r"(^|\. )([a-z])", lambda match: match[1] + match[2].upper(), text)
    if shape == "contrast":
        fine = rng.choice(FINE[other])
        if rng.random() < 0.5:
            return sentence(f"{fine}, but {problem}")
        return sentence(f"{problem}, {rng.choice(['although', 'even though', 'while'])} {fine}")
    if shape == "cause":
        cause = rng.choice(CAUSES[other])
        if rng.random() < 0.5:
            return sentence(f"{cause}, {problem}")
        return sentence(f"{problem} {cause}")
    return sentence(problem)


def make_ticket(category: str, rng: random.Random) -> tuple[str, str]:
    """One (subject, body) pair whose true category is `category`."""
    other = rng.choice([name for name in PROBLEMS if name != category])
    draw, shape = rng.random(), "plain"
    for name, share in SHAPES.items():
        if draw < share:
            shape = name
            break
        draw -= share
    body = " ".join(
        part for part in (rng.choice(OPENERS), compose(category, other, shape, rng), rng.choice(CLOSINGS)) if part
    )
    pick = rng.random()
    subject_pool = SUBJECTS[category] if pick < 0.45 else SUBJECTS[other] if pick < 0.7 else NEUTRAL_SUBJECTS
    return rng.choice(subject_pool), body


def dirty_rows() -> list[tuple[str, str, str]]:
    """Rows the validation gate should quarantine, each for a different reason."""
    log = "ERROR sync worker stopped, see the app log pasted below for details. " * 110
    return [
        ("", "   ", "technical"),  # blank text
        ("", "", "billing"),  # blank text
        ("Where is my order?", "My parcel is late, please check order #55555.", ""),  # no label
        ("Refund", "Please refund my last payment, I was charged by mistake.", "refnd"),  # misspelt label
        ("Crash log", log, "technical"),  # overlong paste (> 5000 characters)
        ("Help", "I need help with my account and my order.", "account"),  # same text ...
        ("Help", "I need help with my account and my order.", "shipping"),  # ... two labels
    ]


def main() -> None:
    rng = random.Random(SEED)
    labels = list(PROBLEMS)
    rows = []
    for category in labels:
        for _ in range(PER_CLASS):
            subject, body = make_ticket(category, rng)
            label = rng.choice(labels) if rng.random() < LABEL_NOISE else category
            rows.append((subject, body, label))
    rng.shuffle(rows)
    out = Path(__file__).with_name("support_tickets.csv")
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket_id", "subject", "body", "category"])
        for number, (subject, body, category) in enumerate(rows + dirty_rows(), start=1):
            writer.writerow([f"T{number:04d}", subject, body, category])


if __name__ == "__main__":
    main()
