function hcSaveRequest(file, req, limit)
    % HCSAVEREQUEST  Save the request struct to a -v7 .mat file, refusing what -v7 cannot hold (internal).
    %   HCSAVEREQUEST(FILE, REQ) saves each field of REQ as a variable (LIMIT, bytes per variable, is
    %   2^31 unless given: tests lower it). A -v7 file holds variables under
    %   2 GB only, and MATLAB does not fail on a larger one: it warns and leaves the variable out (so
    %   Python would compute on a request without its data). Sizes are therefore checked first
    %   (hcRequestBytes), and the file is read back to check that every variable is in it.
    if nargin < 3
        limit = 2^31;
    end
    names = fieldnames(req);
    for i = 1:numel(names)
        bytes = hcRequestBytes(req.(names{i}));
        if bytes >= limit
            error('hessiancore:memoryBudget', ['the request''s %s holds %.3g GB; a -v7 .mat file holds ', ...
                                               'variables under %.3g GB. Pass fewer observations per call ', ...
                                               '(a subsample), or a smaller network'], ...
                  names{i}, bytes / 2^30, limit / 2^30);
        end
    end
    save(file, '-struct', 'req', '-v7');
    saved = whos('-file', file);
    missing = setdiff(names, {saved.name});
    if ~isempty(missing)
        error('hessiancore:transport', ['the request file lacks %s (MATLAB could not save it); nothing ', ...
                                        'was computed'], strjoin(missing', ', '));
    end
end
