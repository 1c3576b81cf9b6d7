function range = hcSupportedPython(release)
    % HCSUPPORTEDPYTHON  Python versions MATLAB's py. interface supports in a release (internal).
    %   RANGE = HCSUPPORTEDPYTHON(RELEASE), RELEASE like '2023b', is [minMinor maxMinor] of Python 3.x, or
    %   [] for a release not in the table. From MathWorks' compatibility table (R2026a not yet verified).
    %   hessiancore itself needs Python >= 3.10; with a Python outside RANGE use the subprocess transport.
    versions = { ...
                '2021b', [7 9]; '2022a', [8 9]; '2022b', [8 10]; '2023a', [8 10]; '2023b', [9 11]; ...
                '2024a', [9 11]; '2024b', [9 12]; '2025a', [9 12]; '2025b', [9 12]; '2026a', [9 13]};
    k = find(strcmpi(versions(:, 1), release), 1);
    if isempty(k)
        range = [];
    else
        range = versions{k, 2};
    end
end
