//! The word lists synthetic records are drawn from. Every name, address and number is made
//! up; codes (ICD-10-CM, LOINC) are real so that the data looks like an EHR's.

/// Given names.
pub(crate) const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Amara", "Ana", "Arjun", "Beatrix", "Bruno", "Carmen", "Chen", "Chloe",
    "Dmitri", "Elena", "Emeka", "Farah", "Felix", "Grace", "Hana", "Hugo", "Ines", "Isaac",
    "Jamal", "Jun", "Kai", "Keiko", "Lars", "Leila", "Lucia", "Malik", "Maya", "Mateo", "Nadia",
    "Noah", "Olga", "Omar", "Priya", "Quinn", "Rafael", "Rosa", "Sami", "Sofia", "Tariq", "Tessa",
    "Uma", "Viktor", "Wen", "Xavier", "Yara", "Yusuf", "Zoe", "Zuri",
];

/// Family names.
pub(crate) const LAST_NAMES: &[&str] = &[
    "Abara",
    "Bergstrom",
    "Castellano",
    "Dubois",
    "Eklund",
    "Fairweather",
    "Gallo",
    "Haddad",
    "Ivanova",
    "Jaramillo",
    "Kowalczyk",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quintero",
    "Rasmussen",
    "Santos",
    "Takahashi",
    "Underwood",
    "Valdez",
    "Whitfield",
    "Xu",
    "Yamada",
    "Zielinski",
    "Achterberg",
    "Brannigan",
    "Cordero",
    "Delacroix",
];

/// Street names (with a house number in front).
pub(crate) const STREETS: &[&str] = &[
    "Maple St",
    "Oak Ave",
    "Cedar Ln",
    "Birch Rd",
    "Willow Way",
    "Elm Ct",
    "Pine Dr",
    "Aspen Pl",
    "Juniper Blvd",
    "Hawthorn St",
    "Sycamore Ave",
    "Magnolia Ln",
];

/// Fictional towns, with a two-letter state code.
pub(crate) const TOWNS: &[(&str, &str)] = &[
    ("Springfield", "ZZ"),
    ("Riverton", "ZZ"),
    ("Fairview", "ZY"),
    ("Lakeside", "ZY"),
    ("Brookhaven", "ZX"),
    ("Millbrook", "ZX"),
];

/// Clinic name stems.
pub(crate) const CLINICS: &[&str] = &[
    "Riverside Family Medicine",
    "Northgate Internal Medicine",
    "Harbor Pediatrics",
    "Summit Cardiology",
    "Valley Community Health",
    "Lakeshore Women's Health",
];

/// ICD-10-CM codes common in primary care.
pub(crate) const ICD10: &[&str] = &[
    "I10", "E11.9", "E78.5", "J06.9", "M54.5", "F41.1", "F32.9", "J45.909", "K21.9", "N39.0",
    "E03.9", "R51.9", "Z00.00", "E66.9", "G43.909", "M17.11", "J02.9", "L30.9", "R05.9", "B20",
];

/// LOINC lab tests: code, unit, typical low and high value.
pub(crate) const LABS: &[(&str, &str, f64, f64)] = &[
    ("2345-7", "mg/dL", 65.0, 180.0),   // glucose
    ("4548-4", "%", 4.5, 9.5),          // hemoglobin A1c
    ("2093-3", "mg/dL", 120.0, 280.0),  // cholesterol
    ("2160-0", "mg/dL", 0.5, 1.6),      // creatinine
    ("718-7", "g/dL", 10.0, 17.5),      // hemoglobin
    ("6690-2", "10*3/uL", 3.5, 12.0),   // leukocytes
    ("2951-2", "mmol/L", 133.0, 147.0), // sodium
    ("2823-3", "mmol/L", 3.2, 5.4),     // potassium
    ("3016-3", "mIU/L", 0.3, 6.0),      // TSH
    ("8480-6", "mm[Hg]", 95.0, 170.0),  // systolic blood pressure
];

/// Medications with a usual dose.
pub(crate) const MEDICATIONS: &[(&str, &str)] = &[
    ("lisinopril", "10 mg daily"),
    ("metformin", "500 mg twice daily"),
    ("atorvastatin", "20 mg daily"),
    ("levothyroxine", "50 mcg daily"),
    ("amlodipine", "5 mg daily"),
    ("omeprazole", "20 mg daily"),
    ("sertraline", "50 mg daily"),
    ("albuterol", "2 puffs as needed"),
    ("ibuprofen", "400 mg as needed"),
    ("amoxicillin", "500 mg three times daily"),
    ("losartan", "50 mg daily"),
    ("gabapentin", "300 mg at night"),
];

/// Kinds of encounter.
pub(crate) const ENCOUNTER_KINDS: &[&str] = &["office", "telehealth", "urgent", "inpatient", "lab"];

/// What a patient reports, for notes.
pub(crate) const COMPLAINTS: &[&str] = &[
    "fatigue for two weeks",
    "intermittent headaches",
    "lower back pain after lifting",
    "a dry cough",
    "poor sleep and low mood",
    "follow-up of blood pressure",
    "burning on urination",
    "a rash on both forearms",
    "shortness of breath on stairs",
    "a routine annual check",
];

/// What the clinician plans, for notes.
pub(crate) const PLANS: &[&str] = &[
    "labs ordered, review in two weeks",
    "continue current medication",
    "start medication, recheck in one month",
    "refer to specialist",
    "lifestyle advice given",
    "imaging ordered",
];
