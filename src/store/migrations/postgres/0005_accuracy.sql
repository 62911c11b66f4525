-- The accuracy radius (km) of a sign-in's location: impossible travel
-- measures the trip between the edges of the two places' circles.
ALTER TABLE sign_ins ADD COLUMN accuracy_km INTEGER;
