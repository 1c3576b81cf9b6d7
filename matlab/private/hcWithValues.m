function net = hcWithValues(net, values)
    % HCWITHVALUES  A copy of NET with its learnables set to VALUES as they are (internal).
    %   NET = HCWITHVALUES(NET, VALUES): VALUES is a cell in Learnables row order (dlarray or numeric
    %   arrays of each learnable's size); numeric values become dlarray objects. Unlike updateLearnables,
    %   the given storage is kept (used for the double-precision copy the MATLAB backend differentiates).
    tbl = net.Learnables;
    for i = 1:numel(values)
        if ~isa(values{i}, 'dlarray')
            values{i} = dlarray(values{i});
        end
    end
    tbl.Value = reshape(values, [], 1);
    try
        net.Learnables = tbl;
    catch err
        % Releases where Learnables cannot be assigned: dlupdate (documented) writes each value.
        if ~exist('dlupdate', 'file')
            rethrow(err);
        end
        net = dlupdate(@(old, value) value, net, tbl);
    end
end
