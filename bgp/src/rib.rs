//! Adj-RIB-In, Loc-RIB and Adj-RIB-Out (to be written).
