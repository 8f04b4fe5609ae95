-- Caption length distribution: one row per split and caption length in words, with how
-- many captions have it and their share of the split's captions.
WITH lengths AS (
    SELECT split, len(string_split(trim(regexp_replace(caption, '\s+', ' ', 'g')), ' ')) AS words
    FROM captions
    WHERE caption IS NOT NULL
)
SELECT
    split,
    CAST(words AS BIGINT) AS words,
    CAST(count(*) AS BIGINT) AS captions,
    CAST(round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY split), 2) AS DOUBLE) AS percent_of_captions
FROM lengths
GROUP BY split, words
ORDER BY split, words;
