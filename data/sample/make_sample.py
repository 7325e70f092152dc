"""Regenerate `support_tickets.csv`, the sample dataset that `make run` trains on.

The tickets were written for tuneloop: each is composed from hand-written openers, problem
statements, details and sign-offs per category, with a fixed seed so the file is reproducible.
A handful of deliberately dirty rows is appended so the validation gate has something to
quarantine. Run: `python data/sample/make_sample.py`.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 7
PER_CLASS = 150

OPENERS = [
    "Hi,",
    "Hello team,",
    "Good morning,",
    "Hey there,",
    "Dear support,",
    "Hi support,",
    "Hello,",
    "To whom it may concern,",
    "Hi folks,",
    "",
    "",
    "Urgent:",
    "Quick question -",
]
CLOSINGS = [
    "Thanks.",
    "Thank you in advance.",
    "Cheers",
    "Regards, Sam",
    "Please advise.",
    "Appreciate the help!",
    "Thanks, Priya",
    "Best, Tom",
    "",
    "",
    "Kind regards, Elena",
    "Let me know asap.",
    "Thx",
]
PRODUCTS = ["Pro plan", "Team plan", "Starter plan", "annual subscription", "Basic plan"]
DEVICES = ["iPhone", "Android phone", "Windows laptop", "MacBook", "iPad", "Chromebook"]
CARRIERS = ["UPS", "FedEx", "DHL", "the postal service", "your courier"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August"]

CATEGORIES: dict[str, dict[str, list[str]]] = {
    "billing": {
        "subjects": [
            "Charged twice",
            "Refund request",
            "Invoice question",
            "Wrong amount on my card",
            "Cancel my subscription and refund",
            "Billing error",
            "Unexpected charge",
            "VAT missing on invoice",
            "Payment declined",
            "Price went up?",
        ],
        "problems": [
            "I was charged twice for the {product} this month.",
            "My card shows two payments of ${amount} on the {day}th.",
            "I cancelled in {month} but you still billed me ${amount}.",
            "The invoice for {month} lists the {product} but I am on the Starter plan.",
            "Could you send me a refund for the duplicate charge of ${amount}?",
            "Your system declined my payment even though the card is valid until {year}.",
            "I need a copy of the invoice with our company VAT number on it.",
            "Why did the price of the {product} go from ${amount} to ${amount2}?",
            "I was billed for 12 seats but our team only has {seats} people.",
            "The promo code was not applied and I paid the full ${amount}.",
            "Please refund order #{order}, I never used the service.",
            "There is a pending charge of ${amount} that I do not recognise.",
        ],
        "details": [
            "The transaction id is TX{order}.",
            "I have attached a screenshot of the bank statement.",
            "This is the second time it happened.",
            "Our accountant needs this by Friday.",
            "I paid with a Visa ending in {card}.",
            "",
            "",
            "My account email is the one I am writing from.",
        ],
    },
    "technical": {
        "subjects": [
            "App crashes on startup",
            "Cannot sync",
            "Error 500 when saving",
            "Login page blank",
            "Export broken",
            "Slow dashboard",
            "Bug in the editor",
            "API returns 401",
            "Notifications not working",
            "Upload fails",
        ],
        "problems": [
            "The app crashes every time I open it on my {device}.",
            "Since the last update, sync stops halfway with error code E{code}.",
            "Saving a document gives me a 500 error.",
            "The dashboard takes more than {seconds} seconds to load.",
            "Exporting to CSV produces an empty file.",
            "The editor freezes when I paste a table from Excel.",
            "Your API keeps returning 401 although the token is fresh.",
            "Push notifications stopped arriving on my {device}.",
            "Uploading files larger than {size} MB fails at 99%.",
            "After the update the page is just blank in Chrome.",
            "Search does not return results that definitely exist.",
            "The integration with Slack disconnects every few hours.",
        ],
        "details": [
            "I already tried reinstalling.",
            "Clearing the cache did not help.",
            "Version {major}.{minor} on {device}.",
            "It worked fine last week.",
            "Logs attached.",
            "",
            "",
            "Steps: open the app, tap sync, wait.",
            "Happens for my whole team.",
        ],
    },
    "shipping": {
        "subjects": [
            "Where is my order?",
            "Package not delivered",
            "Tracking not updating",
            "Wrong item received",
            "Damaged parcel",
            "Change delivery address",
            "Delivery delayed",
            "Missing item in box",
            "Shipping to Canada?",
            "Return label",
        ],
        "problems": [
            "My order #{order} was supposed to arrive {days} days ago.",
            "Tracking with {carrier} has not updated since {month} {day}.",
            "The parcel arrived but the box was crushed and the item is broken.",
            "I received a blue case instead of the black one I ordered.",
            "Can I still change the delivery address for order #{order}?",
            "The driver marked it delivered but nothing is at my door.",
            "One of the {seats} items is missing from the package.",
            "Do you ship to Canada, and how long does it take?",
            "I need a return label for the damaged item from order #{order}.",
            "{carrier} says the address is incomplete, but it is correct.",
            "The estimated delivery keeps moving back every day.",
            "Please send the replacement by express, I need it for a trip.",
        ],
        "details": [
            "Order placed on {month} {day}.",
            "I paid for express shipping.",
            "Photos of the box attached.",
            "",
            "",
            "My neighbour did not get it either.",
            "The tracking number is {carrier_code}{order}.",
            "I am home all week.",
        ],
    },
    "account": {
        "subjects": [
            "Reset password",
            "Locked out",
            "Change email address",
            "Delete my account",
            "Two-factor problem",
            "Add a team member",
            "Username change",
            "Account hacked?",
            "Merge two accounts",
            "Verify my email",
        ],
        "problems": [
            "I forgot my password and the reset email never arrives.",
            "My account is locked after too many login attempts.",
            "How do I change the email address on my profile?",
            "Please delete my account and all personal data.",
            "I lost my phone and cannot get the two-factor code.",
            "How can I invite a new member to our workspace?",
            "I would like to change my username to {name}.",
            "I got an alert about a login from another country, was I hacked?",
            "I have two accounts and want to merge them into one.",
            "The verification link says it has expired.",
            "I cannot update my profile picture, the button does nothing.",
            "Please transfer ownership of the workspace to {name}.",
        ],
        "details": [
            "My username is {name}{seats}.",
            "I checked the spam folder.",
            "",
            "",
            "I have been a customer since {year}.",
            "It is quite urgent.",
            "The old email was {name}@example.com.",
        ],
    },
}
NAMES = ["alex", "jordan", "maria", "kenji", "olga", "lucas", "fatima", "noah", "chen"]


def fill(template: str, rng: random.Random) -> str:
    """Fill a template's placeholders with plausible random values."""
    amount = rng.choice([9, 12, 19, 29, 49, 99, 149])
    return template.format(
        product=rng.choice(PRODUCTS),
        amount=amount,
        amount2=amount + rng.choice([5, 10, 20]),
        day=rng.randint(1, 28),
        month=rng.choice(MONTHS),
        year=rng.randint(2019, 2027),
        seats=rng.randint(2, 9),
        order=rng.randint(10000, 99999),
        card=rng.randint(1000, 9999),
        device=rng.choice(DEVICES),
        code=rng.randint(100, 999),
        seconds=rng.randint(10, 60),
        size=rng.choice([50, 100, 250]),
        major=rng.randint(2, 6),
        minor=rng.randint(0, 20),
        carrier=rng.choice(CARRIERS),
        carrier_code=rng.choice(["1Z", "JD", "FX"]),
        days=rng.randint(3, 14),
        name=rng.choice(NAMES),
    )


def make_ticket(category: str, rng: random.Random) -> tuple[str, str]:
    """Compose one (subject, body) pair for a category."""
    parts = CATEGORIES[category]
    body = " ".join(
        piece
        for piece in (
            rng.choice(OPENERS),
            fill(rng.choice(parts["problems"]), rng),
            fill(rng.choice(parts["details"]), rng),
            fill(rng.choice(parts["problems"]), rng) if rng.random() < 0.25 else "",
            rng.choice(CLOSINGS),
        )
        if piece
    )
    subject = rng.choice(parts["subjects"])
    if rng.random() < 0.15:
        subject = subject.lower()
    return subject, body


def dirty_rows() -> list[tuple[str, str, str]]:
    """Rows the validation gate should quarantine, each for a different reason."""
    log = "ERROR sync worker stopped, see the app log pasted below for details. " * 110
    return [
        ("", "   ", "technical"),  # blank text
        ("", "", "billing"),  # blank text
        ("Where is my order?", "My parcel is late, please check order #55555.", ""),  # no label
        ("Refund", "Please refund my last payment, I was charged by mistake.", "refnd"),  # typo label
        ("Crash log", log, "technical"),  # overlong paste (> 5000 characters)
        ("Help", "I need help with my account and my order.", "account"),  # same text ...
        ("Help", "I need help with my account and my order.", "shipping"),  # ... two labels
    ]


def main() -> None:
    rng = random.Random(SEED)
    rows = [(category, *make_ticket(category, rng)) for category in CATEGORIES for _ in range(PER_CLASS)]
    rng.shuffle(rows)
    records = [(subject, body, category) for category, subject, body in rows] + dirty_rows()
    out = Path(__file__).with_name("support_tickets.csv")
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket_id", "subject", "body", "category"])
        for number, (subject, body, category) in enumerate(records, start=1):
            writer.writerow([f"T{number:04d}", subject, body, category])


if __name__ == "__main__":
    main()
