"""The Adult schema declared from public documentation only (UCI ``adult.names`` and census codebooks).

Nothing here is read from the data: category lists are those documented by UCI, numeric bounds are
the documented or natural ranges. It plays the role of the "numbers binned by hand from public
knowledge" set-up that the AIM and MST baselines use, so the comparison is like for like.
"""

from __future__ import annotations

from tabsynth import CategoricalColumn, IntegerColumn, Schema

WORKCLASS = ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov", "State-gov",
             "Without-pay", "Never-worked")
EDUCATION = ("Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm", "Assoc-voc", "9th",
             "7th-8th", "12th", "Masters", "1st-4th", "10th", "Doctorate", "5th-6th", "Preschool")
MARITAL = ("Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed", "Married-spouse-absent",
           "Married-AF-spouse")
OCCUPATION = ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial", "Prof-specialty",
              "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical", "Farming-fishing", "Transport-moving",
              "Priv-house-serv", "Protective-serv", "Armed-Forces")
RELATIONSHIP = ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried")
RACE = ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black")
SEX = ("Female", "Male")
COUNTRY = ("United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany",
           "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece", "South", "China", "Cuba", "Iran", "Honduras",
           "Philippines", "Italy", "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal", "Ireland", "France",
           "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia", "Hungary", "Guatemala",
           "Nicaragua", "Scotland", "Thailand", "Yugoslavia", "El-Salvador", "Trinadad&Tobago", "Peru", "Hong",
           "Holand-Netherlands")
INCOME = ("<=50K", ">50K")


def zero_inflated_knots(upper: int) -> tuple[float, ...]:
    """Knots for a money amount that is mostly zero with a long right tail (public knowledge about
    capital gains and losses): half the knots at 0, the rest geometric up to ``upper``."""
    tail = [round(upper ** (i / 8)) for i in range(1, 9)]
    return tuple(float(v) for v in [0] * 8 + sorted(set(tail)))


def declared_schema() -> Schema:
    """Adult's 15 columns with their documented domains (census extract: ages 17-90, 1-99 hours)."""
    return Schema((
        IntegerColumn("age", lower=17, upper=90),
        CategoricalColumn("workclass", nullable=True, categories=WORKCLASS),
        IntegerColumn("fnlwgt", lower=1, upper=2_000_000),
        CategoricalColumn("education", categories=EDUCATION),
        IntegerColumn("education_num", lower=1, upper=16),
        CategoricalColumn("marital_status", categories=MARITAL),
        CategoricalColumn("occupation", nullable=True, categories=OCCUPATION),
        CategoricalColumn("relationship", categories=RELATIONSHIP),
        CategoricalColumn("race", categories=RACE),
        CategoricalColumn("sex", categories=SEX),
        IntegerColumn("capital_gain", lower=0, upper=99_999, knots=zero_inflated_knots(99_999)),
        IntegerColumn("capital_loss", lower=0, upper=10_000, knots=zero_inflated_knots(10_000)),
        IntegerColumn("hours_per_week", lower=1, upper=99),
        CategoricalColumn("native_country", nullable=True, categories=COUNTRY),
        CategoricalColumn("income", categories=INCOME),
    ))
