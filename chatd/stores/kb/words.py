"""The words of the FAQ ranking (:mod:`chatd.stores.kb.rank`): those that say
nothing about which entry is meant, and the customers' phrases for what the
FAQ calls otherwise. Data, kept apart from the code that reads it.
"""

from __future__ import annotations

__all__ = ["LEXICON_TEXT", "STOP_WORDS_TEXT"]

# Words that say nothing about *which* entry is meant: function words, the
# question scaffolding every FAQ shares ("how do I", "can you"), contractions
# once their apostrophe is gone ("dont", "im"), chat filler ("hey", "asap",
# "pls") and light verbs ("take", "make"). "where", "when" and "why" stay:
# they tell "Where is my order?" from "Why was my order cancelled?", as do
# the particles of phrasal verbs ("sign up", "log out").
STOP_WORDS_TEXT = """
    a about above after again against all also am an and any anyone anything are aren as
    at be because been before being below between both but by can cannot could couldn d
    did didn do does doesn doing don down during each either else even ever every few for
    from further get gets getting got had hadn has hasn have haven having he hello her
    here hers herself hi him himself his how i if in into is isn it its itself just ll m
    may me might mine more most much must mustn my myself need needs no nor not now o of
    oh ok okay on once one only or other ought our ours ourselves over own please
    pls possible re really s same say shall shan she should shouldn so some somebody
    someone something still such t tell than thank thanks that the their theirs them
    themselves then there these they this those though through thx to too u under until
    upon us ve very via want wanna wants was wasn way we were weren what whats which
    while who whom whose will with won would wouldn y yes yet you your yours yourself
    yourselves able go going know let lets like make take two three four five
    dont cant wont isnt im ive id youre theyre thats doesnt didnt hasnt havent wasnt
    arent couldnt shouldnt wouldnt hey hiya heya hallo yo guys folks asap plz pls thankyou
    ty cheers sorry hmm um uh btw anyway kindly right actually basically maybe
    wondering wonder curious quick question questions quickly help
"""

# Phrases and words customers use for what the FAQ calls otherwise, in the FAQ's
# words: "canonical: variant, variant, ...". General shop vocabulary, written
# from how people talk about orders; not read off any evaluation phrasing.
LEXICON_TEXT = """
    return: send back, send it back, send them back, send this back, send that back,
        bring back, take back, give back, returnable, returning, returns, rma
    refund: money back, reimburse, reimbursed, reimbursement, refunded, refunds,
        pay me back, paid back, credited back, chargeback
    cancel: quit, call off, stop my order, cancellation, cancelled, canceled, canceling, cancelling
    order: purchase, purchased, ordered, orders
    package: parcel, box, shipment, delivery box, packet
    shipping: delivery, delivered, delivering, deliveries, postage, ship, shipped, shipment,
        sent out
    arrive: arrived, arrives, arriving, show up, showed up, shows up, turn up, turned up,
        get here, got here
    received: receive, recieve, recieved, sent me, you sent, got sent, came through, never came
    missing: came with only, only got, only received, not all, short of
    add item: forgot to put, forgot to add, add something, add another, add more
    cod: cash on delivery, pay the courier, pay in cash, pay cash, pay with cash
    weekend: weekends, saturday, sunday, saturdays, sundays
    long: how many days, how soon, when will it arrive, when will it get here, how quickly
    gift: bought me, gave me, given to me, got me, present from
    rewards: earn points, collect points, reward points
    lost: missing parcel, never came, never arrived, never showed, disappeared, stolen
    damaged: broken, smashed, cracked, dented, crushed, torn, ripped, shattered
    login: log in, logging in, sign in, signin, signing in, logon, log on
    account: profile, acct
    password: pass word, pasword, passwd, pwd, passcode
    unsubscribe: opt out, stop sending, stop emailing, unsub, newsletter, promo emails,
        promotional emails, marketing mails, promo mails
    contact: talk to, speak to, speak with, reach, get in touch, human, real person,
        agent, representative, rep, phone number, call you, ring
    installments: instalments, pay later, pay over time, monthly payments, split payment,
        payment plan, spread the cost, split the cost, afterpay, buy now pay later
    declined: rejected, refused, bounced, not going through,
        won't go through, wont go through
    charged twice: double charged, charged double, billed twice, double charge,
        duplicate charge, two charges, charged two times
    express: next day, next-day, overnight, expedited, faster, fastest, rush, same day
    international: internationally, abroad, overseas, worldwide, other countries,
        another country, outside the us, europe, canada, australia, uk
    exchange: swap, switch, trade
    size: sizing, measurements, measure, fits
    warranty: guarantee, guaranteed
    discount: promo code, promo, coupon, voucher code, discount code, promotion
    gift card: giftcard, gift voucher, gift certificate, e-gift card
    invoice: receipt, bill, tax invoice, vat invoice
    address: adress, addres, street, house number, street number, apartment, zip code,
        postcode, postal code
    email: e-mail, mail address, email address
    delete: erase, remove my account, close my account, deactivate, get rid of
    two-factor: 2fa, two factor, mfa, 2-step, two-step, two step
    complaint: complain, complaining, unhappy, dissatisfied, not happy, disappointed
    restock: back in stock, out of stock, sold out, restocked, restocking
    balance: left on, remaining, how much is left, amount left
    invalid: not working, isn't working, doesn't work, won't work, won't apply, not accepted,
        not valid, says invalid
    not home: missed the delivery, missed delivery, wasn't home, was out, not in, away
    worn: washed, tags off, tags removed, tried on, wore, used
    deadline: too late, time limit, how long do i have
    when: still waiting, waiting for, waiting on, how soon
    less: only refunded, not the full, partial, short, less than
    forgot: don't remember, can't remember, forgotten, lost my password
    data: info, personal info, my info, information
    renew: charged again, charge again, next year, every year, yearly, annual, annually
    family: husband, wife, partner, spouse, kids, children, live together, someone else
    cheaper: price drop, price dropped, went on sale, reduced, lower price
"""
