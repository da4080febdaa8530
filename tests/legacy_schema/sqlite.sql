CREATE TABLE studies (
	id VARCHAR(36) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at DATETIME NOT NULL, 
	manifest JSON NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE study_pairs (
	id INTEGER NOT NULL, 
	study_id VARCHAR(36) NOT NULL, 
	pair_key VARCHAR(64) NOT NULL, 
	clip_path TEXT NOT NULL, 
	instruction TEXT NOT NULL, 
	variant_a VARCHAR(100) NOT NULL, 
	variant_b VARCHAR(100) NOT NULL, 
	params JSON NOT NULL, 
	rendered_a TEXT, 
	rendered_b TEXT, 
	is_gold BOOLEAN NOT NULL, 
	gold_bad_side VARCHAR(1), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_study_pairs_study_pair_key UNIQUE (study_id, pair_key), 
	CONSTRAINT ck_study_pairs_gold_side CHECK (gold_bad_side IS NULL OR gold_bad_side IN ('A', 'B')), 
	FOREIGN KEY(study_id) REFERENCES studies (id) ON DELETE CASCADE
);

CREATE INDEX ix_study_pairs_study_id ON study_pairs (study_id);

CREATE TABLE votes (
	id VARCHAR(36) NOT NULL, 
	created_at DATETIME NOT NULL, 
	rater_id VARCHAR(128) NOT NULL, 
	session_id VARCHAR(128) NOT NULL, 
	app_version VARCHAR(64) NOT NULL, 
	study_id VARCHAR(36), 
	pair_id INTEGER, 
	pair_key VARCHAR(64) NOT NULL, 
	clip_hash VARCHAR(64) NOT NULL, 
	instruction TEXT NOT NULL, 
	variant_a VARCHAR(100) NOT NULL, 
	params_a JSON NOT NULL, 
	seed_a INTEGER, 
	timings_a JSON, 
	variant_b VARCHAR(100) NOT NULL, 
	params_b JSON NOT NULL, 
	seed_b INTEGER, 
	timings_b JSON, 
	shown_left VARCHAR(1) NOT NULL, 
	choice VARCHAR(8) NOT NULL, 
	decide_ms INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_votes_rater_pair UNIQUE (rater_id, pair_key), 
	CONSTRAINT ck_votes_choice CHECK (choice IN ('A', 'B', 'tie', 'both_bad')), 
	CONSTRAINT ck_votes_shown_left CHECK (shown_left IN ('A', 'B')), 
	CONSTRAINT ck_votes_decide_ms CHECK (decide_ms >= 0), 
	FOREIGN KEY(study_id) REFERENCES studies (id) ON DELETE SET NULL, 
	FOREIGN KEY(pair_id) REFERENCES study_pairs (id) ON DELETE SET NULL
);

CREATE INDEX ix_votes_created_at ON votes (created_at);

CREATE INDEX ix_votes_study_id ON votes (study_id);
