//! Baseline learning and scoring (see issue 6). Empty until detection lands.
